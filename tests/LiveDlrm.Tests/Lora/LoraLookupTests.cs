using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>The LoRA bag kernels against the naive dense W + A·B, over every storage, pooling, odd dims (so the
/// 16-, 8- and scalar column paths all run) and both threading modes.</summary>
internal class LoraLookupTests
{
    static readonly EmbeddingStorage[] Storages = Enum.GetValues<EmbeddingStorage>();
    static readonly PoolingMode[] Poolings = Enum.GetValues<PoolingMode>();

    static readonly KernelIsa[] Isas = Enum.GetValues<KernelIsa>().Where(EmbeddingKernels.IsSupported).ToArray();

    /// <summary>Every storage × pooling × dim (5, 67: generic path; 16/32/48/64: 1–4 registers at AVX-512; 24: generic
    /// at AVX-512, 3 registers at AVX2) at the widest ISA.</summary>
    [Test]
    public void LookupEqualsDenseEffectiveRows(
        [ValueSource(nameof(Storages))] EmbeddingStorage storage,
        [ValueSource(nameof(Poolings))] PoolingMode pooling,
        [Values(5, 16, 24, 32, 48, 64, 67)] int dim,
        [Values] KernelImplementation code)
        => CheckAgainstDense(storage, pooling, dim, EmbeddingKernels.SelectedIsa, code);

    /// <summary>The narrower register kernels (and the scalar level, which takes the generic path).</summary>
    [Test]
    public void LookupEqualsDenseEffectiveRowsAtEveryIsa([ValueSource(nameof(Isas))] KernelIsa isa, [Values(8, 16, 32, 64)] int dim,
                                                        [Values(EmbeddingStorage.Fp16, EmbeddingStorage.Int8Rowwise, EmbeddingStorage.Fp32)] EmbeddingStorage storage)
        => CheckAgainstDense(storage, PoolingMode.WeightedSum, dim, isa);

    static void CheckAgainstDense(EmbeddingStorage storage, PoolingMode pooling, int dim, KernelIsa isa, KernelImplementation code = KernelImplementation.Managed)
    {
        if (code == KernelImplementation.Native && !EmbeddingKernels.IsNativeSupported(isa)) Assert.Ignore($"no native kernel at {isa} here");
        var rng = new Random(dim * 31 + (int)storage * 7 + (int)pooling);
        using var table = LoraTestData.Table(storage, 2000, dim, seed: dim);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 5, BudgetFraction = 1.0 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 40);
        Assert.That(adapter.ActiveRows, Is.EqualTo(40));
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 50, 9, hot, pooling == PoolingMode.WeightedSum);
        var expected = LoraTestData.NaivePooled(LoraTestData.EffectiveRows(adapter), batch, pooling, dim);

        var reference = new float[batch.Bags * dim];
        LoraEmbeddingBagReference.Forward(adapter, batch.Indices, batch.Offsets, reference, pooling, batch.Weights);
        LoraTestData.AssertClose(reference, expected, 1e-5, "reference");
        var fused = new float[batch.Bags * dim + 3];
        fused.AsSpan(batch.Bags * dim).Fill(-7f);
        using (EmbeddingKernels.Force(isa, code))
            LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, fused, pooling, batch.Weights);
        LoraTestData.AssertClose(fused, expected, 1e-5, $"fused at {isa} {code}");
        Assert.That(fused[^3..], Is.All.EqualTo(-7f), "the kernel wrote past the last bag");
    }

    /// <summary>A batch above the parallel threshold, spread over a pool's worker and the caller.</summary>
    [Test]
    public void LargeBatchOnAWorkerPoolEqualsTheReference([Values(16, 20)] int dim)
    {
        var rng = new Random(5);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 5000, dim, seed: 3);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.5 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 300);
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 1500, 12, hot, weighted: false);
        Assert.That(batch.Indices.Length, Is.GreaterThan(EmbeddingBag.ParallelThresholdLookups));
        var expected = new float[batch.Bags * dim];
        LoraEmbeddingBagReference.Forward(adapter, batch.Indices, batch.Offsets, expected, PoolingMode.Mean);
        using var pool = new EmbeddingWorkerPool(1);
        var actual = new float[batch.Bags * dim];
        LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, actual, PoolingMode.Mean, pool: pool);
        LoraTestData.AssertClose(actual, expected.Select(x => (double)x).ToArray(), 1e-5, "pooled");
    }

    /// <summary>The register kernel's chunked and blocked paths: bags longer than 64 indices (filter and probes for
    /// the later chunks inline), more than one block of 64 bags, a hit/miss mix, rank above 16 (rank-space sum in
    /// memory instead of two registers), and the row-by-row path it falls back to, at every vector ISA.</summary>
    [Test]
    public void LongBagsHighRankAndThePerRowPathEqualTheDenseRows(
        [ValueSource(nameof(VectorIsas))] KernelIsa isa,
        [ValueSource(nameof(Storages))] EmbeddingStorage storage,
        [Values(4, 20)] int rank,
        [Values(false, true)] bool perRow)
    {
        int dim = rank <= 16 ? 16 : 32;                      // MaxRank may not exceed dim
        var rng = new Random(rank * 13 + (int)storage * 3 + (perRow ? 1 : 0));
        using var table = LoraTestData.Table(storage, 3000, dim, seed: rank);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MinRank = 1, MaxRank = rank, BudgetFraction = 1.0 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 150);
        using var callerOnly = new EmbeddingWorkerPool(0);
        foreach (var pooling in new[] { PoolingMode.Sum, PoolingMode.Mean, PoolingMode.WeightedSum })
        {
            var batch = LoraTestData.RandomBatch(rng, table.Rows, 140, 150, hot, pooling == PoolingMode.WeightedSum);
            var expected = LoraTestData.NaivePooled(LoraTestData.EffectiveRows(adapter), batch, pooling, dim);
            var actual = new float[batch.Bags * dim];
            using (perRow ? LoraKernelScopes.ForcePerRow() : null)
            using (EmbeddingKernels.Force(isa))
                LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, actual, pooling, batch.Weights, callerOnly);
            // fp32 sums of up to 150 terms of magnitude ~1: 5e-5, not 1e-5. int8 rows: Σ scale·q and Σ bias are summed
            // apart and added once (FBGEMM's fold, as in the plain kernel): two sums of magnitude ~150 that cancel.
            double tolerance = storage == EmbeddingStorage.Int8Rowwise ? 3e-4 : 5e-5;
            LoraTestData.AssertClose(actual, expected, tolerance, $"{isa} {pooling}{(perRow ? " per row" : "")}");
        }
    }

    static readonly KernelIsa[] VectorIsas = Isas.Where(i => i != KernelIsa.Scalar).ToArray();

    /// <summary>The benchmark aid that gives every index's slot ahead (bench lora --known-slots) serves exactly what the
    /// lookup serves, at every vector ISA and storage; its slots are refused once the adapter changed or for other indices.</summary>
    [Test]
    public void KnownSlotsServeExactlyWhatTheSearchServes([ValueSource(nameof(VectorIsas))] KernelIsa isa,
                                                          [ValueSource(nameof(Storages))] EmbeddingStorage storage)
    {
        int dim = isa switch { KernelIsa.Vector512 => 64, KernelIsa.Vector256 => 32, _ => 16 };   // 4 registers a row
        var rng = new Random(17 + (int)storage);
        using var table = LoraTestData.Table(storage, 4000, dim, seed: 8);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 16, MinRank = 1, MaxRank = 16, BudgetFraction = 1.0 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 300);
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 300, 40, hot, weighted: false);
        Assert.That(batch.Indices.Length, Is.GreaterThan(EmbeddingBag.ParallelThresholdLookups), "large enough for the pool");
        var known = LoraKnownSlots.Resolve(adapter, batch.Indices);
        Assert.That(known.Slots.Count(s => s >= 0), Is.EqualTo(batch.Indices.Count(hot.Contains)), "one slot per adapted index");
        using var pool = new EmbeddingWorkerPool(1);
        var searched = new float[batch.Bags * dim];
        var given = new float[batch.Bags * dim];
        using (EmbeddingKernels.Force(isa))
        {
            LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, searched, pool: pool);
            known.Forward(adapter, batch.Indices, batch.Offsets, given, pool);
        }
        Assert.That(given, Is.EqualTo(searched), $"{isa} {storage}");

        var copy = batch.Indices.ToArray();
        Assert.Throws<ArgumentException>(() => known.Forward(adapter, copy, batch.Offsets, given, pool));
        long fresh = Enumerable.Range(0, (int)table.Rows).First(r => !hot.Contains(r));
        adapter.SetRow(fresh, new float[16]);
        var e = Assert.Throws<InvalidOperationException>(() => known.Forward(adapter, batch.Indices, batch.Offsets, given, pool));
        Assert.That(e!.Message, Does.Contain("resolved for generation"));
    }

    /// <summary>A slot whose counter is odd (the trainer inside its section, so inside a write epoch too) must not be
    /// read: the lookup sees the odd epoch, falls back to the row-by-row path, which waits until the slot's section
    /// closes, then returns the row as it is afterwards.</summary>
    [Test]
    public unsafe void ALookupWaitsWhileAnAdaptedRowIsBeingWritten()
    {
        const int dim = 16;
        var rng = new Random(9);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 1000, dim, seed: 4);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 4, BudgetFraction = 1.0 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 20);
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 30, 10, hot, weighted: false);
        long[] indices = batch.Indices.Append(hot[0]).ToArray();
        long[] offsets = batch.Offsets.ToArray();
        offsets[^1] = indices.Length;                      // the last bag also reads hot[0]
        var expected = LoraTestData.NaivePooled(LoraTestData.EffectiveRows(adapter), batch with { Indices = indices, Offsets = offsets }, PoolingMode.Sum, dim);

        var g = adapter.Pin();
        int* seq;
        try { seq = &g.Record(g.Find(hot[0]))->Seq; }
        finally { TableAdapter.Unpin(g); }
        int before = *seq;
        Assert.That(before % 2, Is.EqualTo(0));
        g.BeginEpochWrite();                                 // as the trainer does: the write epoch, then the slot's section
        Volatile.Write(ref *seq, before + 1);
        var output = new float[batch.Bags * dim];
        using var callerOnly = new EmbeddingWorkerPool(0);
        var lookup = new Thread(() => LoraEmbeddingBag.Forward(adapter, indices, offsets, output, pool: callerOnly));
        lookup.Start();
        bool finishedWhileOdd = lookup.Join(300);
        Volatile.Write(ref *seq, before + 2);                // section closed (nothing changed inside it)
        g.EndEpochWrite();
        lookup.Join();
        Assert.That(finishedWhileOdd, Is.False, "the lookup read a slot whose counter was odd");
        LoraTestData.AssertClose(output, expected, 1e-5, "after the wait");
    }

    /// <summary>The write-epoch tests' setup: an fp32 table whose rows fit the register kernel at the process's ISA
    /// (dim 32, or 16 at SSE4), a rank-8 adapter with <paramref name="hotRows"/> rows set, a Sum batch over them, its
    /// dense W + A·B result, an output buffer and a caller-only pool.</summary>
    sealed class EpochFixture : IDisposable
    {
        public static readonly int Dim = LoraBagKernel.Fits(EmbeddingKernels.SelectedIsa, 32) ? 32 : 16;
        readonly EmbeddingTable _table;
        public TableAdapter Adapter { get; }
        public LoraTestData.Batch Batch { get; }
        public double[] Expected { get; }
        public float[] Output { get; }
        public EmbeddingWorkerPool CallerOnly { get; } = new(0);

        public EpochFixture(int seed, int rows, int tableSeed, int hotRows, int bags, int maxLen)
        {
            var rng = new Random(seed);
            _table = LoraTestData.Table(EmbeddingStorage.Fp32, rows, Dim, tableSeed);
            Adapter = new TableAdapter(_table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.5 });
            long[] hot = LoraTestData.FillAdapter(Adapter, rng, hotRows);
            Batch = LoraTestData.RandomBatch(rng, _table.Rows, bags, maxLen, hot, weighted: false);
            Expected = LoraTestData.NaivePooled(LoraTestData.EffectiveRows(Adapter), Batch, PoolingMode.Sum, Dim);
            Output = new float[Batch.Bags * Dim];
        }

        public void Dispose()
        {
            CallerOnly.Dispose();
            Adapter.Dispose();
            _table.Dispose();
        }
    }

    /// <summary>While the write epoch is odd (the trainer is publishing or merging), the fast path must not serve a
    /// block: every block is done row by row under the slot seqlocks, and the result is still W + A·B.</summary>
    [Test]
    public void ALookupDuringAnOpenWriteEpochIsDoneRowByRow()
    {
        using var f = new EpochFixture(seed: 12, rows: 2000, tableSeed: 6, hotRows: 40, bags: 300, maxLen: 12);
        var (adapter, batch, expected, output, callerOnly) = (f.Adapter, f.Batch, f.Expected, f.Output, f.CallerOnly);

        var g = adapter.Pin();
        try
        {
            using var counts = LoraKernelScopes.CountBlocks();
            g.BeginEpochWrite();
            try { LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, output, pool: callerOnly); }
            finally { g.EndEpochWrite(); }
            Assert.That(counts.Redone, Is.GreaterThanOrEqualTo(5), "300 bags are at least 5 blocks, all redone");
            Assert.That(counts.Fast, Is.EqualTo(0),
                        "no block may be served by the fast path while the epoch is odd");
        }
        finally { TableAdapter.Unpin(g); }
        LoraTestData.AssertClose(output, expected, 5e-5, "odd epoch");
    }

    /// <summary>A trainer that opens and closes the write epoch while a many-block lookup runs (changing nothing):
    /// blocks switch between the fast path and the per-row path mid-batch, and every result must still be the dense
    /// W + A·B — in particular a block after a redone one must not use filter masks computed for another block.</summary>
    [Test]
    public void EpochWritesDuringALookupNeverChangeItsResult([Values] KernelImplementation code)
    {
        if (code == KernelImplementation.Native && !EmbeddingKernels.IsNativeSupported(EmbeddingKernels.SelectedIsa)) Assert.Ignore("no native kernel here");
        using var forced = EmbeddingKernels.Force(EmbeddingKernels.SelectedIsa, code);
        using var f = new EpochFixture(seed: 21, rows: 5000, tableSeed: 7, hotRows: 400, bags: 2000, maxLen: 16);
        var (adapter, batch, expected, output, callerOnly) = (f.Adapter, f.Batch, f.Expected, f.Output, f.CallerOnly);
        var g = adapter.Pin();
        using var stop = new CancellationTokenSource();
        var toggler = new Thread(() =>
        {
            var spin = new SpinWait();
            while (!stop.IsCancellationRequested)
            {
                g.BeginEpochWrite();
                for (int i = 0; i < 200; i++) Thread.SpinWait(1);
                g.EndEpochWrite();
                spin.SpinOnce(sleep1Threshold: -1);
            }
        });
        try
        {
            using var counts = LoraKernelScopes.CountBlocks();
            toggler.Start();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            int lookups = 0;
            while (clock.Elapsed < TimeSpan.FromSeconds(1.5) || counts.Redone < 50 || counts.Fast < 50)
            {
                Array.Clear(output);
                LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, output, pool: callerOnly);
                LoraTestData.AssertClose(output, expected, 5e-5, $"lookup {lookups++}");
                if (clock.Elapsed > TimeSpan.FromSeconds(20)) Assert.Fail("the two paths did not both run");
            }
        }
        finally
        {
            stop.Cancel();
            toggler.Join();
            TableAdapter.Unpin(g);
        }
    }

    [Test]
    public void AnEmptyAdapterGivesThePlainLookup()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 100, 16, seed: 1);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 8, BudgetFraction = 0.5 });
        var batch = LoraTestData.RandomBatch(new Random(1), table.Rows, 20, 6, Array.Empty<long>(), weighted: false);
        var expected = new float[batch.Bags * 16];
        EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
        var actual = new float[batch.Bags * 16];
        LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, actual);
        Assert.That(actual, Is.EqualTo(expected).Within(1e-6f));
    }

    public enum BadInput { IndexTooLarge, NegativeIndex, OffsetsDecreasing, OutputTooShort, MissingWeights }

    [Test]
    public void BadInputThrowsBeforeAnyOutputIsWritten([Values] BadInput corner)
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp16, 50, 8, seed: 2);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.5 });
        long[] indices = { 1, 2, 3, 4 };
        long[] offsets = { 0, 2, 4 };
        var pooling = PoolingMode.Sum;
        int outputLength = 16;
        switch (corner)
        {
            case BadInput.IndexTooLarge: indices[3] = 50; break;
            case BadInput.NegativeIndex: indices[1] = -1; break;
            case BadInput.OffsetsDecreasing: offsets = new long[] { 0, 3, 2, 4 }; outputLength = 24; break;
            case BadInput.OutputTooShort: outputLength = 15; break;
            case BadInput.MissingWeights: pooling = PoolingMode.WeightedSum; break;
        }
        var output = Enumerable.Repeat(42f, outputLength).ToArray();
        Assert.That(() => LoraEmbeddingBagReference.Forward(adapter, indices, offsets, output, pooling), Throws.InstanceOf<ArgumentException>());
        Assert.That(output, Is.All.EqualTo(42f), "the reference validates everything before it writes");
        Assert.That(() => LoraEmbeddingBag.Forward(adapter, indices, offsets, output, pooling), Throws.InstanceOf<ArgumentException>()
            .With.Message.Contains(table.Name));
        // The kernel checks indices in its W loop, as the plain lookup does: a bad one zeroes the bags' outputs (no
        // partial sums left) and throws naming it; bad shapes are refused before anything is written.
        bool badIndex = corner is BadInput.IndexTooLarge or BadInput.NegativeIndex;
        Assert.That(output, Is.All.EqualTo(badIndex ? 0f : 42f));
    }

    /// <summary>A bad index found late in a large batch (many blocks, several workers, the block kernel and the per-row
    /// path): the lookup throws naming it and leaves no partial sums.</summary>
    [Test]
    public void ABadIndexLateInALargeBatchZeroesTheOutputAndIsNamed([Values(EmbeddingStorage.Fp32, EmbeddingStorage.Fp16, EmbeddingStorage.Int8Rowwise)] EmbeddingStorage storage,
                                                                    [Values] bool perRow)
    {
        const int rows = 5000, dim = 32, bags = 3000, len = 4;
        using var table = LoraTestData.Table(storage, rows, dim, seed: 8);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 4, BudgetFraction = 0.2 });
        var rng = new Random(9);
        LoraTestData.FillAdapter(adapter, rng, 200);
        var indices = Enumerable.Range(0, bags * len).Select(_ => rng.NextInt64(rows)).ToArray();
        var offsets = Enumerable.Range(0, bags + 1).Select(b => (long)b * len).ToArray();
        indices[^7] = rows + 3;
        var output = Enumerable.Repeat(42f, bags * dim + 5).ToArray();
        using var pool = new EmbeddingWorkerPool(2);
        using (perRow ? LoraKernelScopes.ForcePerRow() : null)
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => LoraEmbeddingBag.Forward(adapter, indices, offsets, output, PoolingMode.Sum, default, pool));
            Assert.That(e!.Message, Does.Contain(table.Name).And.Contain((rows + 3).ToString()));
        }
        Assert.That(output.Take(bags * dim), Is.All.EqualTo(0f));
        Assert.That(output.Skip(bags * dim), Is.All.EqualTo(42f), "floats past the bags are never touched");
    }

    /// <summary>The one fp16 widening every kernel uses (<see cref="HalfBits"/>), at each width, against the
    /// runtime's Half cast for all 65536 bit patterns.</summary>
    [Test]
    public void VectorHalfConversionMatchesHalfCastForEveryBitPattern()
    {
        bool wide512 = System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
        for (int start = 0; start < 65536; start += 16)
        {
            var bits = Enumerable.Range(start, 16).Select(v => (uint)v).ToArray();
            var wide = wide512 ? HalfBits.ToSingle(System.Runtime.Intrinsics.Vector512.Create(bits)) : default;
            var middle = HalfBits.ToSingle(System.Runtime.Intrinsics.Vector256.Create(bits.AsSpan(0, 8)));
            var narrow = HalfBits.ToSingle(System.Runtime.Intrinsics.Vector128.Create(bits.AsSpan(0, 4)));
            for (int i = 0; i < 16; i++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf((ushort)(start + i));
                if (wide512) Assert.That(SameFloat(wide[i], expected), $"half bits 0x{start + i:x4}: {wide[i]} vs {expected}");
                if (i < 8) Assert.That(SameFloat(middle[i], expected), $"half bits 0x{start + i:x4} (256-bit path): {middle[i]} vs {expected}");
                if (i < 4) Assert.That(SameFloat(narrow[i], expected), $"half bits 0x{start + i:x4} (128-bit path): {narrow[i]} vs {expected}");
            }
        }
    }

    static bool SameFloat(float x, float y) =>
        float.IsNaN(y) ? float.IsNaN(x) : BitConverter.SingleToInt32Bits(x) == BitConverter.SingleToInt32Bits(y);
}
