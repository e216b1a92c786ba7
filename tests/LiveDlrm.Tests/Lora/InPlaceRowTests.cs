using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Lora;

/// <summary>Rows trained in place (<see cref="AdapterOptions.InPlaceRows"/>): a row the adapter cannot hold takes the
/// base trainer's row-wise Adagrad step in W itself, from and into its row state, told to the merge observer; a full
/// pool no longer drops row updates; readers racing the writes never see a torn row.</summary>
internal class InPlaceRowTests
{
    const int Dim = 8, Rank = 4;
    const float Lr = 0.05f;

    sealed class Recorder : IAdapterMergeObserver
    {
        public readonly List<long> Rows = new();
        public int Batches;
        public void MergeStarting(TableAdapter adapter) => Batches++;
        public void MergeFinished(TableAdapter adapter, ReadOnlySpan<long> rows) { foreach (long r in rows) Rows.Add(r); }
    }

    static AdapterOptions InPlace(double budget, bool only) => new()
    {
        InitialRank = Rank, MaxRank = Rank, BudgetFraction = budget, AdagradInitialAccumulator = 0.001f,
        InPlaceRows = true, InPlaceOnly = only, InPlaceLearningRate = Lr,
    };

    [TestCase(EmbeddingStorage.Fp32)]
    [TestCase(EmbeddingStorage.Fp16)]
    public void AnInPlaceOnlyAdapterStepsEveryRowInWByRowwiseAdagrad(EmbeddingStorage storage)
    {
        using var table = LoraTestData.Table(storage, 64, Dim, seed: 5);
        using var adapter = new TableAdapter(table, InPlace(0.9, only: true));
        var stored = new float[64];
        stored[3] = 4f; stored[9] = 0.5f;   // row 5 never trained by the base: 0
        adapter.RowState = new RowAccumulators(stored.ToArray());   // the state owns its array
        var observer = new Recorder();
        adapter.MergeObserver = observer;
        var rows = new Dictionary<long, float[]>();
        foreach (long r in new long[] { 3, 5, 9 }) { rows[r] = new float[Dim]; table.ReadRow(r, rows[r]); }
        var rng = new Random(11);
        float[] g0 = LoraTestData.RandomVector(rng, Dim, 0.1), g1 = LoraTestData.RandomVector(rng, Dim, 0.1), g2 = LoraTestData.RandomVector(rng, Dim, 0.1);

        // Mean pooling: bags [3, 5], [3], [9, 9].
        Assert.That(adapter.ApplyGradients([3L, 5L, 3L, 9L, 9L], [0L, 2L, 3L, 5L], [.. g0, .. g1, .. g2], PoolingMode.Mean), Is.True);

        var expectedGrad = new Dictionary<long, float[]>
        {
            [3] = Enumerable.Range(0, Dim).Select(d => g0[d] / 2 + g1[d]).ToArray(),
            [5] = Enumerable.Range(0, Dim).Select(d => g0[d] / 2).ToArray(),
            [9] = Enumerable.Range(0, Dim).Select(d => g2[d] / 2 + g2[d] / 2).ToArray(),
        };
        var row = new float[Dim];
        foreach (var (r, grad) in expectedGrad)
        {
            float acc = stored[r];
            RowwiseAdagrad.UpdateReference(rows[r], grad, ref acc, Lr, adapter.Options.AdagradEpsilon);
            table.ReadRow(r, row);
            double tolerance = storage == EmbeddingStorage.Fp32 ? 1e-6 : 2e-3;
            for (int d = 0; d < Dim; d++) Assert.That(row[d], Is.EqualTo(rows[r][d]).Within(tolerance), $"row {r}, W[{d}]");
            Assert.That(adapter.RowState![r], Is.EqualTo(acc).Within(1e-6 * (1 + acc)), $"row {r}: accumulator");
            adapter.ReadEffectiveRow(r, row);
            var w = new float[Dim];
            table.ReadRow(r, w);
            Assert.That(row, Is.EqualTo(w), $"row {r}: the effective row is W (no slot)");
        }
        Assert.That(adapter.ActiveRows, Is.EqualTo(0), "no row took a slot");
        Assert.That(adapter.InPlaceRowUpdates, Is.EqualTo(3));
        Assert.That(observer.Batches, Is.EqualTo(1));
        Assert.That(observer.Rows, Is.EquivalentTo(new long[] { 3, 5, 9 }), "the observer hears the rows written into W");
    }

    /// <summary>A step touching more distinct rows than the pool holds: without in-place rows the overflow is dropped;
    /// with them every row's effective value moves and none is dropped.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void RowsAFullPoolCannotHoldAreTrainedInPlaceNotDropped(bool inPlace)
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 4000, Dim, seed: 7);
        using var adapter = new TableAdapter(table, InPlace(0.01, only: false) with { InPlaceRows = inPlace });
        int slots = adapter.SlotCapacity;
        const int Touched = 40;
        Assume.That(slots, Is.LessThan(Touched / 2), "the pool must be smaller than the step's rows");
        var rng = new Random(3);
        var before = new float[Touched][];
        for (int r = 0; r < Touched; r++) { before[r] = new float[Dim]; adapter.ReadEffectiveRow(r, before[r]); }
        var grads = LoraTestData.RandomVector(rng, Touched * Dim, 0.1);
        Assert.That(adapter.ApplyGradients(Enumerable.Range(0, Touched).Select(i => (long)i).ToArray(),
                                           Enumerable.Range(0, Touched + 1).Select(i => (long)i).ToArray(), grads), Is.True);
        var row = new float[Dim];
        int moved = 0;
        for (int r = 0; r < Touched; r++) { adapter.ReadEffectiveRow(r, row); if (!row.SequenceEqual(before[r])) moved++; }
        Assert.That(adapter.ActiveRows, Is.EqualTo(slots));
        if (inPlace)
        {
            Assert.That(adapter.DroppedRowUpdates, Is.EqualTo(0));
            Assert.That(adapter.InPlaceRowUpdates, Is.EqualTo(Touched - slots));
            Assert.That(moved, Is.EqualTo(Touched), "every touched row learned");
        }
        else
        {
            Assert.That(adapter.DroppedRowUpdates, Is.EqualTo(Touched - slots));
            Assert.That(moved, Is.EqualTo(slots), "only the rows with a slot learned");
        }
    }

    [Test]
    public void AnInt8TableRefusesInPlaceRows()
    {
        using var table = EmbeddingTable.Create("q", 100, Dim, EmbeddingStorage.Int8Rowwise);
        var e = Assert.Throws<ArgumentException>(() => new TableAdapter(table, InPlace(0.9, only: false)));
        Assert.That(e!.Message, Does.Contain("InPlaceRows").And.Contain("int8"));
    }

    /// <summary>Readers (block kernel, per-row path, reference, ReadEffectiveRow) racing a writer whose every step goes
    /// into W (an in-place-only adapter, SGD at lr 1 on a pattern that spans the row's first and last cache line). A
    /// row's value is (s, s, s, s) on the pattern with s an integer that only grows; a read must lie in
    /// [done before, started after] and never be torn.</summary>
    [Test, Category("Stress")]
    public void ReadersNeverSeeATornInPlaceRow()
    {
        const int WideDim = 64, rows = 150;
        int[] pattern = [0, 1, WideDim - 2, WideDim - 1];
        using var table = EmbeddingTable.Create("in-place-stress", 4000, WideDim, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, InPlace(0.05, only: true) with { Optimizer = AdapterOptimizer.Sgd, InPlaceLearningRate = 1 });
        var started = new long[rows];
        var done = new long[rows];
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        long reads = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var writer = new Thread(() =>
        {
            var rng = new Random(1);
            var grad = new float[WideDim];
            foreach (int d in pattern) grad[d] = -1;
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    int i = rng.Next(rows);
                    Volatile.Write(ref started[i], Volatile.Read(ref done[i]) + 1);
                    if (!adapter.ApplyGradients([i], [0, 1], grad)) failures.Enqueue("writer: step rejected");
                    Volatile.Write(ref done[i], Volatile.Read(ref started[i]));
                }
            }
            catch (Exception e) { failures.Enqueue("writer: " + e); }
        });
        void Reader(int id)
        {
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
                        var got = output.AsSpan(b * WideDim, WideDim);
                        long hi = Volatile.Read(ref started[indices[b]]);
                        double v = got[0];
                        for (int d = 1; d < WideDim; d++)
                            if (got[d] != (pattern.Contains(d) ? (float)v : 0f)) { failures.Enqueue($"reader {id}, row {indices[b]}: torn at element {d} ({got[d]} vs {v})"); break; }
                        if (v != Math.Round(v) || v < lo[b] || v > hi) failures.Enqueue($"reader {id}, row {indices[b]}: value {v} outside [{lo[b]}, {hi}]");
                    }
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception e) { failures.Enqueue($"reader {id}: " + e); }
        }
        var readers = Enumerable.Range(0, 2).Select(id => new Thread(() => Reader(id))).ToList();
        writer.Start();
        readers.ForEach(t => t.Start());
        writer.Join();
        readers.ForEach(t => t.Join());
        TestContext.Out.WriteLine($"{reads} read batches, {adapter.InPlaceRowUpdates} in-place row updates");
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(5)));
        Assert.That(reads, Is.GreaterThan(100));
        Assert.That(adapter.InPlaceRowUpdates, Is.GreaterThan(1000), "in-place writes must have raced the readers");
    }
}
