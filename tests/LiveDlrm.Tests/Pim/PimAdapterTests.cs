using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Pim;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Model;

namespace LiveDlrm.Tests.Pim;

/// <summary>LoRA adapters over PIM: the DPUs pool Σ W from MRAM, the host adds (Σ A)·B, merges are pushed to MRAM.
/// Compared with the fused CPU kernel on the same adapter (or on an identically built twin for whole models).</summary>
internal class PimAdapterTests
{
    static AdapterOptions Options(int seed = 5) => new() { InitialRank = 3, MaxRank = 4, BudgetFraction = 0.5, Seed = seed, LearningRateA = 0.3f, LearningRateB = 0.1f };

    static PimEmbeddingBackend NewPim() => new(new PimBackendOptions { Backend = PimTestSupport.Backend, DpusPerTable = 4 });

    [Test]
    public void PoolingOverPimEqualsTheFusedKernel([Values] PoolingMode pooling, [Values(8, 20)] int dim)
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("adapted", 300, dim, seed: dim);
        using var adapter = new TableAdapter(table, Options());
        var rng = new Random(dim);
        long[] hot = SetRandomRows(adapter, rng, 40);
        using var backend = new AdapterEmbeddingBackend(NewPim());
        backend.Attach(adapter);
        var (indices, offsets) = Batch(rng, table.Rows, 60, 9, hot);
        var weights = pooling == PoolingMode.WeightedSum ? indices.Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray() : [];

        var expected = new float[60 * dim];
        LoraEmbeddingBag.Forward(adapter, indices, offsets, expected, pooling, weights, new EmbeddingWorkerPool(0));
        var actual = new float[60 * dim];
        backend.Forward(table, indices, offsets, actual, pooling, weights);

        Assert.That(backend.Name, Does.StartWith("lora+pim-"));
        AssertEffectiveSumsMatch(adapter, indices, offsets, pooling, actual, expected, "PIM + adapter term", weights);
    }

    [Test]
    public void MergedRowsArePushedToMram([Values] bool mergeAll)
    {
        PimTestSupport.RequireLibrary();
        const int dim = 8;
        using var table = PimTestSupport.RandomTable("merged", 200, dim, seed: 3);
        using var adapter = new TableAdapter(table, Options());
        var rng = new Random(11);
        long[] hot = SetRandomRows(adapter, rng, 30);
        using var backend = new AdapterEmbeddingBackend(NewPim());
        backend.Attach(adapter);
        var (indices, offsets) = Batch(rng, table.Rows, 50, 8, hot);
        var before = new float[50 * dim];
        backend.Forward(table, indices, offsets, before);     // loads the table on the DPUs with the unmerged W
        var baseBefore = hot.Select(r => { var w = new float[dim]; table.ReadRow(r, w); return w; }).ToArray();

        int merged = mergeAll ? adapter.ActiveRows : adapter.MergeOldest(12);
        if (mergeAll) adapter.MergeAll();
        Assert.That(adapter.ActiveRows, Is.EqualTo(30 - merged));
        Assert.That(backend.PushedRows(table), Is.EqualTo(merged), "every merged row is pushed, once");

        var expected = new float[50 * dim];
        LoraEmbeddingBag.Forward(adapter, indices, offsets, expected, pool: new EmbeddingWorkerPool(0));
        var actual = new float[50 * dim];
        backend.Forward(table, indices, offsets, actual);
        AssertEffectiveSumsMatch(adapter, indices, offsets, PoolingMode.Sum, actual, expected, "after the merge");
        // The merge moved the stored base of the merged rows (so the comparison above depends on the push having
        // landed) and kept the effective rows: the same lookup gives what it gave before, to rounding.
        int moved = 0;
        var now = new float[dim];
        for (int k = 0; k < hot.Length; k++)
        {
            table.ReadRow(hot[k], now);
            if (now.Where((v, d) => Math.Abs(v - baseBefore[k][d]) > 1e-3f).Any()) moved++;
        }
        Assert.That(moved, Is.EqualTo(merged), "each merged row's base changed, the others did not");
        AssertEffectiveSumsMatch(adapter, indices, offsets, PoolingMode.Sum, actual, before, "before vs after the merge");
    }

    /// <summary>Merges through the trainer's own path: eviction when the pool is full and a rank change.</summary>
    [Test]
    public void EvictionMergesDuringTrainingArePushed()
    {
        PimTestSupport.RequireLibrary();
        const int dim = 8;
        using var table = PimTestSupport.RandomTable("evicting", 400, dim, seed: 9);
        var options = Options() with { BudgetFraction = 0.05 };
        using var adapter = new TableAdapter(table, options);
        using var backend = new AdapterEmbeddingBackend(NewPim());
        backend.Attach(adapter);
        var rng = new Random(2);
        for (int step = 0; step < 12; step++)
        {
            var (indices, offsets) = Batch(rng, table.Rows, 32, 4, []);
            var pooled = new float[32 * dim];
            backend.Forward(table, indices, offsets, pooled);
            var gradients = pooled.Select(v => v - 0.5f).ToArray();
            Assert.That(adapter.ApplyGradients(indices, offsets, gradients, PoolingMode.Sum), Is.True);
        }
        Assert.That(adapter.MergedRows, Is.GreaterThan(0), "the budget must be small enough for training to evict");
        Assert.That(backend.PushedRows(table), Is.EqualTo(adapter.MergedRows));

        var (ti, to) = Batch(rng, table.Rows, 64, 6, []);
        var expected = new float[64 * dim];
        LoraEmbeddingBag.Forward(adapter, ti, to, expected, pool: new EmbeddingWorkerPool(0));
        var actual = new float[64 * dim];
        backend.Forward(table, ti, to, actual);
        AssertEffectiveSumsMatch(adapter, ti, to, PoolingMode.Sum, actual, expected, "after training with evictions");
    }

    /// <summary>A whole DLRM served through adapters over PIM scores like its CPU twin (same seed, same adapter
    /// steps, same merges): before and after merges.</summary>
    [Test]
    public void DlrmModelThroughAdaptersOverPimEqualsTheCpuPath()
    {
        PimTestSupport.RequireLibrary();
        TorchRuntime.EnsureInitialised();
        var config = new DlrmConfig(4, [8, 4], [8, 1],
            [new DlrmTableConfig("t0", 120, 4, PoolingMode.Sum, EmbeddingStorage.Fp32),
             new DlrmTableConfig("t1", 80, 4, PoolingMode.Mean, EmbeddingStorage.Fp32),
             new DlrmTableConfig("t2", 7, 4, PoolingMode.Sum, EmbeddingStorage.Fp32)]);
        using var cpu = new Twin(config, new CpuEmbeddingBackend(new EmbeddingWorkerPool(0), ownsPool: true));
        using var pim = new Twin(config, NewPim());
        var batch = TinyDlrm.RandomBatch(config, 64, 3);

        for (int step = 0; step < 5; step++)
        {
            cpu.TrainStep(batch, step);
            pim.TrainStep(batch, step);
        }
        Assert.That(pim.Adapters.Select(a => a.ActiveRows), Is.All.GreaterThan(10), "training must have adapted rows");
        AssertScoresMatch(cpu.Model.Predict(batch), pim.Model.Predict(batch), "trained adapters");
        var inner = (PimEmbeddingBackend)pim.Inner;
        long launches = inner.Stats(pim.Model.Tables[0]).Launches;
        pim.Model.Predict(batch);
        Assert.That(inner.Stats(pim.Model.Tables[0]).Launches - launches, Is.EqualTo(1), "two adapted tables and a plain one, one launch");

        cpu.Adapters[0].MergeOldest(10);
        pim.Adapters[0].MergeOldest(10);
        cpu.Adapters[1].MergeAll();
        pim.Adapters[1].MergeAll();
        Assert.That(pim.Backend.PushedRows(pim.Model.Tables[0]) + pim.Backend.PushedRows(pim.Model.Tables[1]), Is.GreaterThan(10));
        AssertScoresMatch(cpu.Model.Predict(batch), pim.Model.Predict(batch), "after MergeOldest / MergeAll");
    }

    /// <summary>Readers on the PIM path race a writer that updates and merges one row. The row's effective value is
    /// always (s, …, s) with s growing by one per update, while its A is never zero at a merge: seeing the merged base
    /// together with A (double count) gives more than the writer ever started, seeing the old MRAM copy without A
    /// (update lost) gives less than it had finished. Any read must lie in [done before, started after].</summary>
    [Test, Category("Stress")]
    public void MergesNeverDoubleCountOrLoseAnUpdateOnThePimPath()
    {
        PimTestSupport.RequireLibrary();
        const int dim = 8, rows = 64;
        using var table = EmbeddingTable.Create("race", rows, dim, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 1, MinRank = 1, MaxRank = 2, BudgetFraction = 1 });
        adapter.SetB(Enumerable.Repeat(1f, dim).ToArray());
        using var backend = new AdapterEmbeddingBackend(NewPim());
        backend.Attach(adapter);
        long[] indices = [0], offsets = [0, 1];
        var output = new float[dim];
        backend.Forward(table, indices, offsets, output);   // load before the race

        long started = 0, done = 0, reads = 0, merges = 0;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var writer = new Thread(() =>
        {
            float merged = 0;          // W[0] as of the last merge: A = s − merged keeps the effective value at s
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    long s = done + 1;
                    Volatile.Write(ref started, s);
                    adapter.SetRow(0, [s - merged]);
                    Volatile.Write(ref done, s);
                    if (s % 3 == 0)
                    {
                        adapter.MergeOldest(1);
                        merged = s;
                        merges++;
                    }
                    // At most a couple of writer steps per read, so [done, started] stays narrower than the error a
                    // double count (+3) or a lost update (−3) would show.
                    long seen = Volatile.Read(ref reads);
                    var spin = new SpinWait();
                    while (Volatile.Read(ref reads) == seen && !stop.IsCancellationRequested) spin.SpinOnce(sleep1Threshold: -1);
                }
            }
            catch (Exception e) { failures.Enqueue("writer: " + e); }
        }) { Name = "pim-race-writer" };
        writer.Start();
        var value = new float[dim];
        while (!stop.IsCancellationRequested && failures.IsEmpty)
        {
            long low = Volatile.Read(ref done);
            backend.Forward(table, indices, offsets, value);
            long high = Volatile.Read(ref started);
            Interlocked.Increment(ref reads);
            if (value.Any(v => v != value[0]) || value[0] < low || value[0] > high || value[0] != MathF.Round(value[0]))
                failures.Enqueue($"read {reads}: ({string.Join(", ", value)}) outside [{low}, {high}]");
        }
        writer.Join();
        TestContext.Out.WriteLine($"{reads} reads, {merges} merges, {done} updates");
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(5)));
        Assert.That(reads, Is.GreaterThan(20));
        Assert.That(merges, Is.GreaterThan(10), "too few merges raced the readers to mean anything");
        Assert.That(backend.PushedRows(table), Is.EqualTo(merges));
    }

    [Test]
    public void AnAdapterWithAnotherObserverIsRefusedAndNothingIsAttached()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("observed", 50, 8);
        using var adapter = new TableAdapter(table, Options());
        using var first = new AdapterEmbeddingBackend(NewPim());
        using var second = new AdapterEmbeddingBackend(NewPim());
        first.Attach(adapter);
        Assert.That(() => second.Attach(adapter), Throws.InvalidOperationException.With.Message.Contains("merge observer"));
        Assert.That(second.AdapterOf(table), Is.Null);
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>A model on its own adapter backend with adapters on every table big enough for one.</summary>
    sealed class Twin : IDisposable
    {
        public DlrmModel Model { get; }
        public AdapterEmbeddingBackend Backend { get; }
        public List<TableAdapter> Adapters { get; } = new();

        public IEmbeddingBackend Inner { get; }

        public Twin(DlrmConfig config, IEmbeddingBackend inner)
        {
            Inner = inner;
            Backend = new AdapterEmbeddingBackend(inner);
            Model = DlrmModel.Create(config, 7, Backend);
            foreach (var t in Model.Tables.Where(t => t.Rows > 10))
            {
                var adapter = new TableAdapter(t, Options(seed: Adapters.Count + 1) with { BudgetFraction = 1 });
                Backend.Attach(adapter);
                Adapters.Add(adapter);
            }
        }

        /// <summary>One deterministic adapter step per table from gradients that depend only on the step.</summary>
        public void TrainStep(EventBatch batch, int step)
        {
            for (int t = 0; t < Adapters.Count; t++)
            {
                var rng = new Random(step * 10 + t);
                var gradients = new float[batch.Count * Adapters[t].Table.Dim];
                for (int i = 0; i < gradients.Length; i++) gradients[i] = (float)(rng.NextDouble() - 0.5);
                Assert.That(Adapters[t].ApplyGradients(batch.Indices(t), batch.Offsets(t), gradients, Model.Config.Tables[t].Pooling), Is.True);
            }
        }

        public void Dispose()
        {
            Model.Dispose();
            foreach (var a in Adapters) a.Dispose();
        }
    }

    static long[] SetRandomRows(TableAdapter adapter, Random rng, int count)
    {
        var rows = new HashSet<long>();
        while (rows.Count < count) rows.Add(rng.NextInt64(adapter.Table.Rows));
        foreach (long r in rows)
            adapter.SetRow(r, Enumerable.Range(0, adapter.Rank).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
        adapter.SetB(Enumerable.Range(0, adapter.Rank * adapter.Table.Dim).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
        return rows.ToArray();
    }

    /// <summary>Bags of 0..maxLen ids, half of them from <paramref name="hot"/> when given.</summary>
    static (long[] Indices, long[] Offsets) Batch(Random rng, long rows, int bags, int maxLen, long[] hot)
    {
        var offsets = new long[bags + 1];
        var indices = new List<long>();
        for (int b = 0; b < bags; b++)
        {
            int len = rng.Next(maxLen + 1);
            for (int j = 0; j < len; j++) indices.Add(hot.Length > 0 && rng.Next(2) == 0 ? hot[rng.Next(hot.Length)] : rng.NextInt64(rows));
            offsets[b + 1] = indices.Count;
        }
        return (indices.ToArray(), offsets);
    }

    /// <summary>|actual − expected| ≤ 1e-6 · Σ_j |W[i_j]| + |A[i_j]·B| (scaled for Mean) per element: the bound for the
    /// same terms summed in another order.</summary>
    static void AssertEffectiveSumsMatch(TableAdapter adapter, long[] indices, long[] offsets, PoolingMode pooling, float[] actual, float[] expected, string what,
                                         float[]? weights = null)
    {
        var table = adapter.Table;
        int dim = table.Dim;
        var b = adapter.CopyB(out int rank);
        var w = new float[dim];
        var a = new float[adapter.Options.MaxRank];
        for (int bag = 0; bag < offsets.Length - 1; bag++)
        {
            var magnitude = new double[dim];
            long n = offsets[bag + 1] - offsets[bag];
            for (long j = offsets[bag]; j < offsets[bag + 1]; j++)
            {
                table.ReadRow(indices[j], w);
                int r = adapter.ReadRow(indices[j], a);
                double weight = weights is { Length: > 0 } ? Math.Abs(weights[j]) : 1;
                for (int d = 0; d < dim; d++)
                {
                    double delta = 0;
                    for (int k = 0; k < r; k++) delta += Math.Abs(a[k] * b[k * dim + d]);
                    magnitude[d] += weight * (Math.Abs(w[d]) + delta);
                }
            }
            double scale = pooling == PoolingMode.Mean && n > 0 ? 1.0 / n : 1;
            for (int d = 0; d < dim; d++)
            {
                double diff = Math.Abs(actual[bag * dim + d] - expected[bag * dim + d]);
                if (diff > 1e-6 * magnitude[d] * scale + 1e-30)
                    Assert.Fail($"{what}: bag {bag} column {d}: {actual[bag * dim + d]:R} vs {expected[bag * dim + d]:R} (|diff| {diff:E2} > 1e-6 x {magnitude[d] * scale:F3})");
            }
        }
    }

    /// <summary>Scores (sigmoid outputs) agree to 1e-6 relative.</summary>
    static void AssertScoresMatch(float[] expected, float[] actual, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-6 * Math.Abs(expected[i]) + 1e-7), $"{what}: event {i}");
    }
}
