using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Eviction = merge keeps effective rows (to the storage's quantisation), picks the least recently updated
/// rows, and the adapter never exceeds its memory budget.</summary>
internal class MergeAndBudgetTests
{
    /// <summary>Worst-case error of re-quantising a value near 1–2 in magnitude.</summary>
    static double Tolerance(EmbeddingStorage s) => s switch
    {
        EmbeddingStorage.Fp32 => 1e-5,
        EmbeddingStorage.Fp16 => 2e-3,
        _ => 0.02,   // int8 rowwise: half a step of (max − min) / 255 for rows spanning about ±2.5
    };

    [Test]
    public void MergeAllKeepsEffectiveRowsAndResetsTheAdapter([Values] EmbeddingStorage storage)
    {
        var rng = new Random(1);
        using var table = LoraTestData.Table(storage, 200, 24, seed: 3);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 8, BudgetFraction = 0.5, EnergyToKeep = 1.0, GrowThreshold = 0 });
        LoraTestData.FillAdapter(adapter, rng, 60);
        adapter.AdaptRank();                        // rank 8 now: MergeAll must also reset the rank
        Assert.That(adapter.Rank, Is.EqualTo(8));
        var before = LoraTestData.EffectiveRows(adapter);
        long version = adapter.Version;
        adapter.MergeAll();
        Assert.That(adapter.ActiveRows, Is.Zero);
        Assert.That(adapter.Rank, Is.EqualTo(4));
        Assert.That(adapter.Version, Is.GreaterThan(version));
        Assert.That(adapter.MergedRows, Is.EqualTo(60));
        Assert.That(LoraTestData.MaxAbsDiff(before, LoraTestData.EffectiveRows(adapter)), Is.LessThan(Tolerance(storage)));
    }

    [Test]
    public void MergeOldestFoldsTheLeastRecentlyUpdatedRows()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Int8Rowwise, 100, 16, seed: 4);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.5 });
        foreach (long r in new long[] { 10, 20, 30, 40 }) adapter.SetRow(r, new[] { 0.5f, -0.25f });
        adapter.SetRow(10, new[] { 0.1f, 0.2f });      // 10 is now the most recent
        var before = LoraTestData.EffectiveRows(adapter);
        Assert.That(adapter.MergeOldest(2), Is.EqualTo(2));
        var a = new float[4];
        Assert.That(new long[] { 10, 20, 30, 40 }.Select(r => adapter.ReadRow(r, a)), Is.EqualTo(new[] { 2, 0, 0, 2 }));
        Assert.That(LoraTestData.MaxAbsDiff(before, LoraTestData.EffectiveRows(adapter)), Is.LessThan(Tolerance(EmbeddingStorage.Int8Rowwise)));
    }

    [Test]
    public void AFullPoolEvictsByMergingAndKeepsEveryEffectiveRow([Values] EmbeddingStorage storage)
    {
        var rng = new Random(2);
        using var table = LoraTestData.Table(storage, 2000, 16, seed: 5);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 4, BudgetFraction = 0.05 });
        int capacity = adapter.SlotCapacity;
        Assert.That(capacity, Is.InRange(10, 500));
        // Expected effective rows, maintained densely as rows are set.
        var expected = LoraTestData.EffectiveRows(adapter);
        var b = adapter.CopyB(out _);
        for (int n = 0; n < capacity * 3; n++)
        {
            long row = rng.NextInt64(table.Rows);
            var a = LoraTestData.RandomVector(rng, 4, 0.3);
            // the row's current A is replaced: effective = (base + merged part) + new A·B
            var current = new float[4];
            int had = adapter.ReadRow(row, current);
            adapter.SetRow(row, a);
            for (int d = 0; d < 16; d++)
            {
                double delta = 0;
                for (int k = 0; k < 4; k++) delta += (a[k] - (had > 0 ? current[k] : 0)) * b[k * 16 + d];
                expected[row][d] += delta;
            }
            Assert.That(adapter.ActiveRows, Is.LessThanOrEqualTo(capacity));
        }
        Assert.That(adapter.MergedRows, Is.GreaterThan(0));
        Assert.That(LoraTestData.MaxAbsDiff(expected, LoraTestData.EffectiveRows(adapter)), Is.LessThan(3 * Tolerance(storage)));
    }

    /// <summary>A long random training workload with periodic rank adaptation (growth allowed up to a rank whose
    /// slots eat most of the budget): the allocated adapter bytes never pass the budget, and lookups still equal the
    /// dense W + A·B at the end.</summary>
    [Test]
    public void BudgetIsNeverExceededUnderALongRandomWorkload([Values(EmbeddingStorage.Fp16, EmbeddingStorage.Int8Rowwise)] EmbeddingStorage storage)
    {
        var rng = new Random(9);
        const int dim = 32;
        using var table = LoraTestData.Table(storage, 30000, dim, seed: 1);
        var options = new AdapterOptions
        {
            InitialRank = 4, MinRank = 2, MaxRank = 24, GrowStep = 4, GrowThreshold = 0.02, EnergyToKeep = 0.95,
            BudgetFraction = 0.01, RankAdaptInterval = 7, LearningRateA = 0.05f, LearningRateB = 0.01f,
        };
        using var adapter = new TableAdapter(table, options);
        Assert.That(adapter.BudgetBytes, Is.EqualTo((long)(0.01 * table.ByteSize)));
        long maxBytes = 0;
        for (int step = 0; step < 300; step++)
        {
            // skewed ids: half from a small hot set, half uniform
            int bags = 48;
            var offsets = new long[bags + 1];
            var indices = new List<long>();
            for (int b = 0; b < bags; b++)
            {
                int len = rng.Next(1, 9);
                for (int j = 0; j < len; j++) indices.Add(rng.Next(2) == 0 ? rng.Next(300) : rng.NextInt64(table.Rows));
                offsets[b + 1] = indices.Count;
            }
            var grad = LoraTestData.RandomVector(rng, bags * dim, 0.5);
            Assert.That(adapter.ApplyGradients(indices.ToArray(), offsets, grad), Is.True);
            Assert.That(adapter.AllocatedBytes, Is.LessThanOrEqualTo(adapter.BudgetBytes), $"step {step}");
            Assert.That(adapter.ActiveRows, Is.LessThanOrEqualTo(adapter.SlotCapacity));
            maxBytes = Math.Max(maxBytes, adapter.AllocatedBytes);
        }
        var history = adapter.History;
        Assert.That(history.Any(h => h.NewRank > h.OldRank), "the workload should grow the rank at least once");
        Assert.That(adapter.MergedRows, Is.GreaterThan(0), "the workload should fill the pool and evict");
        Assert.That(history.All(h => h.AdapterBytes <= h.BudgetBytes));
        Assert.That(maxBytes, Is.GreaterThan(adapter.BudgetBytes / 2), "the budget is actually used");
        TestContext.Out.WriteLine($"rank path: {string.Join(" → ", history.Select(h => h.NewRank))}; merged {adapter.MergedRows}; max {maxBytes} of {adapter.BudgetBytes} bytes");

        var hot = Enumerable.Range(0, 300).Select(i => (long)i).ToArray();
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 64, 8, hot, weighted: false);
        var expected = LoraTestData.NaivePooled(LoraTestData.EffectiveRows(adapter), batch, PoolingMode.Sum, dim);
        var actual = new float[batch.Bags * dim];
        LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, actual);
        LoraTestData.AssertClose(actual, expected, 1e-4, "lookup after the workload");
    }
}
