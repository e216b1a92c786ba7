using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Online;

internal class JointBudgetTests
{
    static readonly DlrmConfig Config = new(3, [8, 32], [8, 1],
        [new DlrmTableConfig("big", 4000, 32, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("small", 40, 32, PoolingMode.Sum, EmbeddingStorage.Fp32)]);

    static readonly DlrmConfig TinyTableConfig = new(3, [8, 32], [8, 1],
        [new DlrmTableConfig("big", 4000, 32, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("tiny", 8, 32, PoolingMode.Sum, EmbeddingStorage.Fp32)]);

    static (long[] Budgets, long[] Allocated, long Total) Create(bool joint) => Create(Config, joint, 1);

    static (long[] Budgets, long[] Allocated, long Total) Create(DlrmConfig config, bool joint, double smallMultiple)
    {
        TorchRuntime.EnsureInitialised();
        var options = new OnlineTrainerOptions
        {
            MaxBatchWait = null, JointBudget = joint, SmallTableBudgetMultiple = smallMultiple,
            Adapter = new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.02 },
        };
        using var live = LiveModel.Create(config, 1, new LiveModelOptions { Trainer = options, BaseBackend = ModelCopy.InlineCpuBackend });
        var model = live.Model;
        var adapters = live.Adapters;
        for (int t = 0; t < adapters.Count; t++)
            if (adapters[t] is { } a) Assert.That(a.SlotCapacity, Is.GreaterThanOrEqualTo(Math.Min(options.MinAdapterRows, model.Tables[t].Rows)), model.Tables[t].Name);
        long total = (long)Math.Floor(0.02 * model.Tables.Sum(t => t.ByteSize));
        return (adapters.Select(a => a?.BudgetBytes ?? 0).ToArray(), adapters.Select(a => a?.AllocatedBytes ?? 0).ToArray(), total);
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

    [Test]
    public void TinyTableNeedsMoreThanItsOwnSizeAndGetsItOnlyWhenAllowed()
    {
        long tinyBytes = 8 * 32 * sizeof(float);
        var (strict, _, _) = Create(TinyTableConfig, joint: true, smallMultiple: 1);
        Assert.That(strict[1], Is.EqualTo(0), "B alone (2 × rank × dim floats) plus 8 slots exceed the 1 KiB table");

        var (budgets, allocated, total) = Create(TinyTableConfig, joint: true, smallMultiple: 4);
        Assert.That(budgets[1], Is.GreaterThan(tinyBytes).And.LessThanOrEqualTo(4 * tinyBytes));
        Assert.That(budgets.Sum(), Is.LessThanOrEqualTo(total), "still within the joint total");
        for (int t = 0; t < 2; t++) Assert.That(allocated[t], Is.LessThanOrEqualTo(budgets[t]), $"table {t}");
        Assert.That(() => new OnlineTrainerOptions { SmallTableBudgetMultiple = 0 }.Validate(),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("SmallTableBudgetMultiple"));
    }
}
