using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Replay;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Online;

public class JointBudgetTests
{
    static readonly DlrmConfig Config = new(3, [8, 32], [8, 1],
        [new DlrmTableConfig("big", 4000, 32, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("small", 40, 32, PoolingMode.Sum, EmbeddingStorage.Fp32)]);

    static (long[] Budgets, long[] Allocated, long Total) Create(bool joint)
    {
        TorchRuntime.EnsureInitialised();
        var options = new OnlineTrainerOptions
        {
            MaxBatchWait = null, JointBudget = joint,
            Adapter = new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.02 },
        };
        var backend = new AdapterEmbeddingBackend(ModelCopy.InlineCpuBackend());
        using var model = DlrmModel.Create(Config, 1, backend);
        var adapters = OnlineTrainer.CreateAdapters(model, backend, options);
        try
        {
            long total = (long)Math.Floor(0.02 * model.Tables.Sum(t => t.ByteSize));
            return (adapters.Select(a => a?.BudgetBytes ?? 0).ToArray(), adapters.Select(a => a?.AllocatedBytes ?? 0).ToArray(), total);
        }
        finally { foreach (var a in adapters) a?.Dispose(); }
    }

    [Test]
    public void PerTableBudgetLeavesTheSmallTableWithoutAnAdapter()
    {
        var (budgets, _, _) = Create(joint: false);
        Assert.That(budgets[0], Is.GreaterThan(0));
        Assert.That(budgets[1], Is.EqualTo(0), "2 % of a 40-row table cannot hold B");
    }

    [Test]
    public void JointBudgetFundsTheSmallTableAndStaysWithinTheTotal()
    {
        var (budgets, allocated, total) = Create(joint: true);
        Assert.That(budgets[1], Is.GreaterThan(0), "small table funded from the total");
        Assert.That(budgets[0], Is.GreaterThan(0), "the big table keeps the rest");
        Assert.That(budgets.Sum(), Is.LessThanOrEqualTo(total));
        Assert.That(budgets.Sum(), Is.GreaterThan(total * 9 / 10), "the total is used, not wasted");
        for (int t = 0; t < 2; t++) Assert.That(allocated[t], Is.LessThanOrEqualTo(budgets[t]), $"table {t}");
    }
}
