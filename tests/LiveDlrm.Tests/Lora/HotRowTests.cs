using System.Diagnostics;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Hot rows served from W (<see cref="AdapterOptions.HotRowFraction"/>): a hot row's step goes straight into
/// W and leaves the lookup's map; lookups still equal the dense effective rows; the budget holds; merges stay exact;
/// readers racing the hot-row writes never see a torn row.</summary>
internal class HotRowTests
{
    const int Dim = 16, Rank = 4;

    static float[] UnitRows(int rank, int dim)
    {
        var b = new float[rank * dim];
        for (int k = 0; k < rank; k++) b[k * dim + k] = 1;
        return b;
    }

    /// <summary>One bag per row, Sum pooling, gradient −(1, 1, 1, 1, 0, …) on every bag: with B = unit rows and SGD at
    /// lrA = 1 the row's A (or, once hot, its W) gains (1, 1, 1, 1).</summary>
    static bool StepUp(TableAdapter adapter, params long[] rows)
    {
        var offsets = Enumerable.Range(0, rows.Length + 1).Select(i => (long)i).ToArray();
        var grad = new float[rows.Length * Dim];
        for (int b = 0; b < rows.Length; b++)
            for (int d = 0; d < Rank; d++) grad[b * Dim + d] = -1;
        return adapter.ApplyGradients(rows, offsets, grad);
    }

    /// <summary>The stress test's rows: dim 64 (four cache lines of fp32) with the pattern on the first and the last
    /// line, so a row read while a step is half written shows unequal pattern elements.</summary>
    const int WideDim = 64;
    static readonly int[] WidePattern = [0, 1, WideDim - 2, WideDim - 1];

    static float[] WideUnitRows()
    {
        var b = new float[Rank * WideDim];
        for (int k = 0; k < Rank; k++) b[k * WideDim + WidePattern[k]] = 1;
        return b;
    }

    static bool WideStepUp(TableAdapter adapter, long row)
    {
        var grad = new float[WideDim];
        foreach (int d in WidePattern) grad[d] = -1;
        return adapter.ApplyGradients([row], [0, 1], grad);
    }

    static AdapterOptions PatternOptions(double hotFraction) => new()
    {
        InitialRank = Rank, MinRank = Rank, MaxRank = Rank, Optimizer = AdapterOptimizer.Sgd, LearningRateA = 1, LearningRateB = 0,
        BudgetFraction = 0.05, HotRowFraction = hotFraction, HotAfterSteps = 2,
    };

    [Test]
    public void AHotRowLeavesTheMapAndItsStepsGoIntoW([Values(EmbeddingStorage.Fp32, EmbeddingStorage.Fp16)] EmbeddingStorage storage)
    {
        using var table = EmbeddingTable.Create("hot", 2000, Dim, storage);
        using var adapter = new TableAdapter(table, PatternOptions(0.3));
        adapter.SetB(UnitRows(Rank, Dim));
        var a = new float[Rank];
        var row = new float[Dim];

        Assert.That(StepUp(adapter, 7, 9), Is.True);
        Assert.That(adapter.ReadRow(7, a), Is.EqualTo(Rank), "one step: still slot-served");
        Assert.That(adapter.HotRows, Is.EqualTo(0));
        Assert.That(StepUp(adapter, 7, 9), Is.True);
        Assert.That(adapter.HotRows, Is.EqualTo(2), "two steps (HotAfterSteps): hot");
        Assert.That(adapter.ReadRow(7, a), Is.EqualTo(0), "a hot row has no slot");
        table.ReadRow(7, row);
        Assert.That(row.Take(Rank), Is.All.EqualTo(2f), "promotion merged A·B into W");

        Assert.That(StepUp(adapter, 7), Is.True);
        Assert.That(adapter.ReadRow(7, a), Is.EqualTo(0), "a hot row's step does not give it a slot");
        Assert.That(adapter.HotRowUpdates, Is.EqualTo(1));
        table.ReadRow(7, row);
        Assert.That(row.Take(Rank), Is.All.EqualTo(3f));
        Assert.That(row.Skip(Rank), Is.All.EqualTo(0f));
        adapter.ReadEffectiveRow(7, row);
        Assert.That(row.Take(Rank), Is.All.EqualTo(3f));

        // The lookup (block kernel and per-row path) and the reference serve the hot row from W.
        long[] indices = [7, 9, 7, 100];
        long[] offsets = [0, 2, 4];
        var output = new float[2 * Dim];
        LoraEmbeddingBag.Forward(adapter, indices, offsets, output);
        Assert.That(output[0], Is.EqualTo(5f));
        Assert.That(output[Dim], Is.EqualTo(3f));
        using (LoraKernelScopes.ForcePerRow()) LoraEmbeddingBag.Forward(adapter, indices, offsets, output);
        Assert.That(output[0], Is.EqualTo(5f));
        LoraEmbeddingBagReference.Forward(adapter, indices, offsets, output);
        Assert.That(output[0], Is.EqualTo(5f));

        // SetRow on a hot row makes it slot-served again (the effective row is W + A·B from then on).
        adapter.SetRow(9, [1, 1, 1, 1]);
        Assert.That(adapter.HotRows, Is.EqualTo(1));
        adapter.ReadEffectiveRow(9, row);
        Assert.That(row.Take(Rank), Is.All.EqualTo(3f));
    }

    /// <summary>Promoted rows leave stale filter bits; the adapter rebuilds the map (and so the filter) once enough
    /// rows were promoted, so lookups of hot rows stop probing the map.</summary>
    [Test]
    public unsafe void PromotedRowsLeaveTheFilterAfterARebuild()
    {
        using var table = EmbeddingTable.Create("hot", 20_000, Dim, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, PatternOptions(0.5));
        adapter.SetB(UnitRows(Rank, Dim));
        long[] rows = Enumerable.Range(0, 64).Select(i => (long)(i * 37)).ToArray();
        Assert.That(adapter.SlotCapacity, Is.GreaterThanOrEqualTo(rows.Length));
        long version = adapter.Version;
        StepUp(adapter, rows);
        StepUp(adapter, rows);
        Assert.That(adapter.HotRows, Is.EqualTo(rows.Length));
        Assert.That(adapter.Version, Is.GreaterThan(version), "promotions of 1/16 of the pool or more rebuild the map");
        var g = adapter.Pin();
        try
        {
            int passing = rows.Count(r => AdapterGeneration.MayContain(g.FilterPointer, g.FilterShift, r));
            Assert.That(passing, Is.LessThan(rows.Length / 8), "hot rows still pass the presence filter");
        }
        finally { TableAdapter.Unpin(g); }
    }

    [Test]
    public void AnInt8TableRefusesHotRows()
    {
        using var table = EmbeddingTable.Create("q", 2000, Dim, EmbeddingStorage.Int8Rowwise);
        var e = Assert.Throws<ArgumentException>(() => new TableAdapter(table, PatternOptions(0.3)));
        Assert.That(e!.Message, Does.Contain("HotRowFraction").And.Contain("int8"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdapterOptions { HotRowFraction = 1 }.Validate("t"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdapterOptions { HotAfterSteps = 0 }.Validate("t"));
    }

    /// <summary>Random Adagrad training with hot rows on: the budget holds (the hot set's capacity is counted), the hot
    /// set fills and drops rows, lookups equal dense W + A·B on every path, and MergeAll keeps effective rows.</summary>
    [Test]
    public void TrainingWithHotRowsKeepsLookupsBudgetAndMerges([Values(EmbeddingStorage.Fp32, EmbeddingStorage.Fp16)] EmbeddingStorage storage)
    {
        var rng = new Random(3);
        const int rows = 3000, dim = 32;
        using var table = LoraTestData.Table(storage, rows, dim, seed: 4);
        var options = new AdapterOptions { InitialRank = 8, MaxRank = 16, BudgetFraction = 0.05, HotRowFraction = 0.03, HotAfterSteps = 3, RankAdaptInterval = 7, LearningRateA = 0.05f };
        using var adapter = new TableAdapter(table, options);
        using var plainTable = LoraTestData.Table(storage, rows, dim, seed: 4);
        using var plain = new TableAdapter(plainTable, options with { HotRowFraction = 0 });
        Assert.That(adapter.SlotCapacity, Is.LessThan(plain.SlotCapacity), "the hot set's bytes come out of the slot pool's budget");
        long[] hot = Enumerable.Range(0, 40).Select(_ => rng.NextInt64(rows)).ToArray();
        int maxHot = 0;
        for (int step = 0; step < 200; step++)
        {
            var batch = LoraTestData.RandomBatch(rng, rows, 24, 6, hot, weighted: false);
            var grad = LoraTestData.RandomVector(rng, batch.Bags * dim, 0.1);
            Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, grad, PoolingMode.Mean), Is.True);
            Assert.That(adapter.AllocatedBytes, Is.LessThanOrEqualTo(adapter.BudgetBytes));
            maxHot = Math.Max(maxHot, adapter.HotRows);
        }
        TestContext.Out.WriteLine($"hot rows {adapter.HotRows} (max {maxHot}), hot updates {adapter.HotRowUpdates}, slots live {adapter.ActiveRows}/{adapter.SlotCapacity}, merged {adapter.MergedRows}");
        Assert.That(adapter.HotRowUpdates, Is.GreaterThan(100));
        Assert.That(maxHot, Is.LessThanOrEqualTo((int)(options.HotRowFraction * adapter.BudgetBytes / HotRowSet.BytesFor(1, options.InitialRank))));

        double tol = storage == EmbeddingStorage.Fp32 ? 1e-4 : 2e-3;
        var effective = LoraTestData.EffectiveRows(adapter);
        var check = LoraTestData.RandomBatch(rng, rows, 64, 8, hot, weighted: false);
        var output = new float[check.Bags * dim];
        var expected = LoraTestData.NaivePooled(effective, check, PoolingMode.Sum, dim);
        LoraEmbeddingBag.Forward(adapter, check.Indices, check.Offsets, output);
        LoraTestData.AssertClose(output, expected, tol, "block kernel");
        using (LoraKernelScopes.ForcePerRow()) LoraEmbeddingBag.Forward(adapter, check.Indices, check.Offsets, output);
        LoraTestData.AssertClose(output, expected, tol, "per-row path");
        LoraEmbeddingBagReference.Forward(adapter, check.Indices, check.Offsets, output);
        LoraTestData.AssertClose(output, expected, tol, "reference");

        adapter.MergeAll();
        double mergeTol = storage == EmbeddingStorage.Fp32 ? 1e-5 : 2e-3;
        Assert.That(LoraTestData.MaxAbsDiff(LoraTestData.EffectiveRows(adapter), effective), Is.LessThan(mergeTol * 10));
    }

    /// <summary>Hot rows learn exactly as slot rows do: the same Adagrad steps (A and B trained) on an adapter with hot
    /// rows and on one without give the same effective rows and the same B, up to float association — B gets the hot
    /// rows' gradient, and hot rows not touched by a step still follow B's change. Fails if hot rows are left out of
    /// dB or their W is not refreshed when B moves (both measured: differences of 1e-2 and more).</summary>
    [Test]
    public void HotRowsTrainAsSlotRowsDo()
    {
        var rng = new Random(11);
        const int rows = 3000, dim = 32, usedRows = 300;
        var options = new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.3, HotRowFraction = 0.3, HotAfterSteps = 3, LearningRateA = 0.05f, LearningRateB = 0.02f };
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, rows, dim, seed: 5);
        using var adapter = new TableAdapter(table, options);
        using var plainTable = LoraTestData.Table(EmbeddingStorage.Fp32, rows, dim, seed: 5);
        using var plain = new TableAdapter(plainTable, options with { HotRowFraction = 0 });
        Assert.That(adapter.SlotCapacity, Is.GreaterThanOrEqualTo(usedRows), "no evictions: the two adapters must stay comparable");
        long[] hot = Enumerable.Range(0, 30).Select(i => (long)i * 7).ToArray();
        for (int step = 0; step < 120; step++)
        {
            var batch = LoraTestData.RandomBatch(rng, usedRows, 16, 6, hot, weighted: false);
            var grad = LoraTestData.RandomVector(rng, batch.Bags * dim, 0.1);
            Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, grad, PoolingMode.Mean), Is.True);
            Assert.That(plain.ApplyGradients(batch.Indices, batch.Offsets, grad, PoolingMode.Mean), Is.True);
        }
        Assert.That(adapter.HotRows, Is.GreaterThan(20), "the hot rows must have been promoted");
        Assert.That(plain.MergedRows, Is.EqualTo(0));
        double diff = LoraTestData.MaxAbsDiff(LoraTestData.EffectiveRows(adapter), LoraTestData.EffectiveRows(plain));
        var b1 = adapter.CopyB(out _);
        var b2 = plain.CopyB(out _);
        double bDiff = b1.Zip(b2, (x, y) => Math.Abs(x - y)).Max();
        TestContext.Out.WriteLine($"hot rows {adapter.HotRows}, hot updates {adapter.HotRowUpdates}; max |Δ effective| {diff:E2}, max |ΔB| {bDiff:E2}");
        Assert.That(bDiff, Is.LessThan(1e-4), "B must get the same gradient from hot rows as from slot rows");
        Assert.That(diff, Is.LessThan(1e-4), "hot rows' effective rows must follow the same training as slot rows'");
    }

    /// <summary>Readers (block kernel, per-row path, reference, ReadEffectiveRow) racing a writer whose steps go straight
    /// into W for hot rows, with LRU and full merges between. Every row's effective value is (s, s, s, s, 0, …) with s an
    /// integer that only grows (see <see cref="AdapterConcurrencyTests"/>); a read must lie in [done before, started after].</summary>
    [Test, Category("Stress")]
    public void ReadersNeverSeeATornHotRow()
    {
        var duration = TimeSpan.FromSeconds(4);
        const int rows = 150;
        using var table = EmbeddingTable.Create("hot-stress", 4000, WideDim, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, PatternOptions(0.5) with { BudgetFraction = 0.01 });
        adapter.SetB(WideUnitRows());
        var started = new long[rows];
        var done = new long[rows];
        using var stop = new CancellationTokenSource(duration);
        long reads = 0, steps = 0, fastBlocks = 0, redoneBlocks = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();

        var writer = new Thread(() =>
        {
            var rng = new Random(1);
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    int op = rng.Next(1000);
                    if (op < 2)
                    {
                        adapter.MergeAll();
                        adapter.SetB(WideUnitRows());
                    }
                    else if (op < 10) adapter.MergeOldest(4);
                    else
                    {
                        int i = rng.Next(rows);
                        Volatile.Write(ref started[i], Volatile.Read(ref done[i]) + 1);
                        if (!WideStepUp(adapter, i)) failures.Enqueue("writer: step rejected");
                        Volatile.Write(ref done[i], Volatile.Read(ref started[i]));
                        steps++;
                    }
                }
            }
            catch (Exception e) { failures.Enqueue("writer: " + e); }
        }) { Name = "hot-writer" };

        void Reader(int id)
        {
            using var counts = LoraKernelScopes.CountBlocks();
            var rng = new Random(100 + id);
            const int bags = 32;
            var indices = new long[bags];
            var offsets = Enumerable.Range(0, bags + 1).Select(i => (long)i).ToArray();
            var output = new float[bags * WideDim];
            var lo = new long[bags];
            var row = new float[WideDim];
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    for (int b = 0; b < bags; b++) { indices[b] = rng.Next(rows); lo[b] = Volatile.Read(ref done[indices[b]]); }
                    switch ((id + reads) % 4)
                    {
                        case 0: LoraEmbeddingBag.Forward(adapter, indices, offsets, output); break;
                        case 1: using (LoraKernelScopes.ForcePerRow()) LoraEmbeddingBag.Forward(adapter, indices, offsets, output); break;
                        case 2: LoraEmbeddingBagReference.Forward(adapter, indices, offsets, output); break;
                        default:
                            for (int b = 0; b < bags; b++) { adapter.ReadEffectiveRow(indices[b], row); row.CopyTo(output, b * WideDim); }
                            break;
                    }
                    for (int b = 0; b < bags; b++)
                    {
                        string? problem = Check(output.AsSpan(b * WideDim, WideDim), lo[b], Volatile.Read(ref started[indices[b]]));
                        if (problem is not null) failures.Enqueue($"reader {id}, row {indices[b]}: {problem}");
                    }
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception e) { failures.Enqueue($"reader {id}: " + e); }
            finally
            {
                Interlocked.Add(ref fastBlocks, counts.Fast);
                Interlocked.Add(ref redoneBlocks, counts.Redone);
            }
        }

        var readers = Enumerable.Range(0, 2).Select(id => new Thread(() => Reader(id)) { Name = $"hot-reader-{id}" }).ToList();
        var clock = Stopwatch.StartNew();
        writer.Start();
        readers.ForEach(t => t.Start());
        writer.Join();
        readers.ForEach(t => t.Join());
        TestContext.Out.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {reads} read batches, {steps} steps, {adapter.HotRowUpdates} hot-row updates, {adapter.MergedRows} rows merged; " +
                                  $"kernel blocks: {fastBlocks} fast, {redoneBlocks} redone");
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(5)));
        Assert.That(reads, Is.GreaterThan(500));
        Assert.That(adapter.HotRowUpdates, Is.GreaterThan(200), "hot-row writes must have raced the readers");
        Assert.That(fastBlocks, Is.GreaterThan(50));
        Assert.That(redoneBlocks, Is.GreaterThan(50), "no block overlapped a hot-row write");
    }

    static string? Check(ReadOnlySpan<float> row, long lo, long hi)
    {
        double v = row[0];
        for (int d = 1; d < WideDim; d++)
        {
            float expected = WidePattern.Contains(d) ? (float)v : 0f;
            if (row[d] != expected) return $"torn: element {d} is {row[d]}, expected {expected} (element 0 is {v})";
        }
        long s = (long)Math.Round(v);
        if (v != s) return $"value {v} is not one the row ever had";
        if (s < lo || s > hi) return $"value {s} outside [{lo}, {hi}] (a step seen twice or not at all)";
        return null;
    }
}
