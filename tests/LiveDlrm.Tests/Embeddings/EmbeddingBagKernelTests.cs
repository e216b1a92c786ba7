using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Every kernel path (each ISA level the CPU supports, the C# kernels and the native kernel at the levels it
/// has, each row format, int and long indices, every pooling, single- and multi-threaded) against the scalar reference.</summary>
[TestFixture]
internal class EmbeddingBagKernelTests
{
    static readonly int[] Dims = [1, 3, 16, 17, 64, 100, 128, 256];
    static readonly KernelIsa[] Isas = Enum.GetValues<KernelIsa>();

    /// <summary>Every (level, code) pair a lookup can run with: the C# kernels at each level, the native kernel at
    /// Vector256 and Vector512.</summary>
    static readonly (KernelIsa Isa, KernelImplementation Code)[] Variants =
        [.. Isas.Select(i => (i, KernelImplementation.Managed)), (KernelIsa.Vector256, KernelImplementation.Native), (KernelIsa.Vector512, KernelImplementation.Native)];

    static bool Runs((KernelIsa Isa, KernelImplementation Code) v) =>
        v.Code == KernelImplementation.Native ? EmbeddingKernels.IsNativeSupported(v.Isa) : EmbeddingKernels.IsSupported(v.Isa);

    static IEnumerable<TestCaseData> Cases()
    {
        foreach (var (isa, code) in Variants)
            foreach (var storage in Enum.GetValues<EmbeddingStorage>())
                foreach (int dim in Dims)
                    yield return new TestCaseData(isa, code, storage, dim).SetName($"{isa}_{(code == KernelImplementation.Native ? "native_" : "")}{storage}_dim{dim}");
    }

    static EmbeddingWorkerPool _pool = null!;

    [OneTimeSetUp] public void StartPool() => _pool = new EmbeddingWorkerPool(2);
    [OneTimeTearDown] public void StopPool() => _pool.Dispose();

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(KernelIsa isa, KernelImplementation code, EmbeddingStorage storage, int dim)
    {
        if (!Runs((isa, code))) Assert.Ignore($"{isa} {code} not supported here");
        using var scope = EmbeddingKernels.Force(isa, code);
        using var table = EmbeddingTestData.RandomTable("t", 97, dim, storage, seed: dim);
        // Enough lookups that the threaded run really goes through the pool.
        var (indices, offsets, weights) = EmbeddingTestData.RandomBatch(table.Rows, bags: 400, maxPooling: 40, seed: dim * 7 + (int)storage);
        Assert.That(indices.Length, Is.GreaterThanOrEqualTo(EmbeddingBag.ParallelThresholdLookups));
        var ints = EmbeddingTestData.ToInt(indices);
        var intOffsets = EmbeddingTestData.ToInt(offsets);
        const double tolerance = 1e-5;
        foreach (var pooling in Enum.GetValues<PoolingMode>())
        {
            var w = pooling == PoolingMode.WeightedSum ? weights : [];
            var reference = EmbeddingTestData.Reference(table, indices, offsets, weights, pooling);
            foreach (var pool in new[] { new EmbeddingWorkerPool(0), _pool })
            {
                string what = $"{isa} {code} {storage} dim {dim} {pooling} threads {pool.ThreadCount + 1}";
                var output = new float[(offsets.Length - 1) * dim];
                output.AsSpan().Fill(float.NaN);
                EmbeddingBag.Forward(table, indices, offsets, output, pooling, w, pool);
                EmbeddingTestData.AssertClose(reference, output, dim, tolerance, what + " long");
                output.AsSpan().Fill(float.NaN);
                EmbeddingBag.Forward(table, ints, intOffsets, output, pooling, w, pool);
                EmbeddingTestData.AssertClose(reference, output, dim, tolerance, what + " int");
                if (pool != _pool) pool.Dispose();
            }
        }
    }

    /// <summary>A one-row table: every index is 0 and that row ends the native buffer, so a load past a row's end in
    /// any width / tail path would read outside the allocation.</summary>
    [TestCase(EmbeddingStorage.Fp32)]
    [TestCase(EmbeddingStorage.Fp16)]
    [TestCase(EmbeddingStorage.Int8Rowwise)]
    public void SingleRowTables(EmbeddingStorage storage)
    {
        foreach (var (isa, code) in Variants.Where(Runs))
            foreach (int dim in Dims)
            {
                using var scope = EmbeddingKernels.Force(isa, code);
                using var table = EmbeddingTestData.RandomTable("one-row", 1, dim, storage, seed: dim);
                long[] indices = [0, 0, 0, 0, 0];
                long[] offsets = [0, 1, 1, 5];
                float[] weights = [0.5f, 2f, -1f, 3f, 0.25f];
                foreach (var pooling in Enum.GetValues<PoolingMode>())
                {
                    var output = new float[3 * dim + 8];
                    output.AsSpan().Fill(float.NaN);
                    EmbeddingBag.Forward(table, indices, offsets, output.AsSpan(0, 3 * dim), pooling, pooling == PoolingMode.WeightedSum ? weights : default, _pool);
                    EmbeddingTestData.AssertMatchesReference(table, indices, offsets, weights, pooling, output, 1e-5, $"{isa} {code} {storage} dim {dim} {pooling}");
                    Assert.That(output.AsSpan(3 * dim).ToArray(), Is.All.NaN, "written past the output");
                }
            }
    }

    [Test]
    public void BackendIsNamedAfterTheIsaAndMatchesTheReference()
    {
        using var backend = new CpuEmbeddingBackend(new EmbeddingWorkerPool(1), ownsPool: true);
        Assert.That(backend.Name, Is.EqualTo("cpu-" + EmbeddingKernels.IsaName(EmbeddingKernels.SelectedIsa)));
        using (EmbeddingKernels.Force(KernelIsa.Scalar)) Assert.That(backend.Name, Is.EqualTo("cpu-scalar"));
        using var table = EmbeddingTestData.RandomTable("backend", 50, 24, EmbeddingStorage.Fp16, seed: 9);
        var (indices, offsets, weights) = EmbeddingTestData.RandomBatch(table.Rows, bags: 300, maxPooling: 30, seed: 10);
        var output = new float[300 * 24];
        backend.Forward(table, indices, offsets, output, PoolingMode.WeightedSum, weights);
        EmbeddingTestData.AssertMatchesReference(table, indices, offsets, weights, PoolingMode.WeightedSum, output, 1e-5, "backend");
    }

    [Test]
    public void ForcingAnUnsupportedLevelThrows()
    {
        foreach (var isa in Isas.Where(i => !EmbeddingKernels.IsSupported(i)))
            Assert.Throws<NotSupportedException>(() => EmbeddingKernels.Force(isa));
        using (EmbeddingKernels.Force(KernelIsa.Scalar))
        {
            Assert.That(EmbeddingKernels.CurrentIsa, Is.EqualTo(KernelIsa.Scalar));
            using (EmbeddingKernels.Force(KernelIsa.Vector128)) Assert.That(EmbeddingKernels.CurrentIsa, Is.EqualTo(KernelIsa.Vector128));
            Assert.That(EmbeddingKernels.CurrentIsa, Is.EqualTo(KernelIsa.Scalar), "scopes nest");
        }
        Assert.That(EmbeddingKernels.CurrentIsa, Is.EqualTo(EmbeddingKernels.SelectedIsa));
    }

    /// <summary>Every one of the 65536 half bit patterns (subnormals, ±0, ±Inf, NaNs included, written raw through
    /// StoredRow) widens exactly as (float)(Half) does, at every ISA level.</summary>
    [Test]
    public void Fp16WideningIsExactForEveryBitPattern()
    {
        const int dim = 64, rows = 65536 / dim;
        using var table = EmbeddingTable.Create("all-halves", rows, dim, EmbeddingStorage.Fp16);
        for (int r = 0; r < rows; r++)
        {
            var bytes = table.StoredRow(r);
            for (int d = 0; d < dim; d++) BitConverter.TryWriteBytes(bytes.Slice(2 * d, 2), (ushort)(r * dim + d));
        }
        var indices = Enumerable.Range(0, rows).Select(i => (long)i).ToArray();
        var offsets = Enumerable.Range(0, rows + 1).Select(i => (long)i).ToArray();
        var output = new float[rows * dim];
        foreach (var (isa, code) in Variants.Where(Runs))
        {
            using var scope = EmbeddingKernels.Force(isa, code);
            EmbeddingBag.Forward(table, indices, offsets, output, PoolingMode.Sum, default, _pool);
            for (int bits = 0; bits < 65536; bits++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits), actual = output[bits];
                bool same = float.IsNaN(expected) ? float.IsNaN(actual) : actual == expected;
                if (!same) Assert.Fail($"{isa} {code}: half 0x{bits:X4} widened to {actual}, expected {expected}");
            }
        }
    }

    /// <summary>The native kernel runs on this machine when its library was built and the CPU has AVX2 + F16C (the
    /// development and CI machines do): without this, every native case above would be skipped silently.</summary>
    [Test]
    public void NativeKernelIsAvailableWhereTheCpuHasTheLevel()
    {
        // .NET 10 has no F16C class: the kernel's own cpuid view is what is being tested, so ask the OS.
        bool f16c = File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo").Split((char[])[' ', '\t', '\n']).Contains("f16c");
        if (!f16c || !EmbeddingKernels.IsSupported(KernelIsa.Vector256)) Assert.Ignore("no AVX2 + F16C here");
        Assert.That(EmbeddingKernels.IsNativeSupported(KernelIsa.Vector256), Is.True, "liblivedlrm_kernels.so not found or not loadable");
        Assert.That(EmbeddingKernels.IsNativeSupported(KernelIsa.Vector128), Is.False);
        Assert.Throws<NotSupportedException>(() => EmbeddingKernels.Force(KernelIsa.Scalar, KernelImplementation.Native));
        using (EmbeddingKernels.Force(KernelIsa.Vector256))
            Assert.That(EmbeddingKernels.ImplementationFor(EmbeddingStorage.Fp16), Is.EqualTo(KernelImplementation.Managed), "Force(isa) alone means the C# kernels");
        using (EmbeddingKernels.Force(KernelIsa.Vector256, KernelImplementation.Native))
            Assert.That(EmbeddingKernels.ImplementationFor(EmbeddingStorage.Fp32), Is.EqualTo(KernelImplementation.Native));
    }

    /// <summary>The kernels' own bounds check, below validation (a batch mutated after it validated): random batches
    /// with random ids, some of them replaced by random out-of-range values (negative, == rows, huge), straight into
    /// the C# and the native kernel of every level. Each must stop with false exactly when the range holds a bad id,
    /// and otherwise match the reference.</summary>
    [Test]
    public unsafe void KernelsStopAtAnyOutOfRangeIndex()
    {
        var rng = new Random(1234);
        foreach (var storage in Enum.GetValues<EmbeddingStorage>())
            foreach (int dim in new[] { 3, 64, 100 })
            {
                using var table = EmbeddingTestData.RandomTable("fuzz", 37, dim, storage, seed: dim + 5);
                for (int trial = 0; trial < 40; trial++)
                {
                    var (indices, offsets, _) = EmbeddingTestData.RandomBatch(table.Rows, bags: 20, maxPooling: 12, seed: rng.Next());
                    if (indices.Length == 0) continue;
                    bool corrupt = trial % 2 == 1;
                    if (corrupt)
                        for (int k = 0, n = 1 + rng.Next(3); k < n; k++)
                            indices[rng.Next(indices.Length)] = rng.Next(4) switch
                            {
                                0 => -1 - rng.Next(1000),
                                1 => table.Rows,
                                2 => long.MaxValue - rng.Next(1000),
                                _ => table.Rows + rng.Next(1 << 20),
                            };
                    foreach (var (isa, code) in Variants.Where(Runs))
                    {
                        var output = new float[20 * dim];
                        bool ok;
                        fixed (long* ix = indices)
                        fixed (long* off = offsets)
                        fixed (float* y = output)
                        {
                            var job = new BagJob
                            {
                                Table = table.DataPointer, Rows = table.Rows, Stride = table.RowStride, Dim = dim,
                                Indices = ix, Offsets = off, Output = y, Bags = 20, PrefetchDistance = rng.Next(3) * 8,
                                Kernel = code == KernelImplementation.Native ? NativeBagKernel.Select<long>(isa, storage) : EmbeddingBag.SelectKernel<long>(isa, storage),
                            };
                            ok = job.Kernel(in job, 0, 20);
                        }
                        string what = $"{isa} {code} {storage} dim {dim} trial {trial}";
                        Assert.That(ok, Is.EqualTo(!corrupt), what);
                        if (!corrupt) EmbeddingTestData.AssertMatchesReference(table, indices, offsets, [], PoolingMode.Sum, output, 1e-5, what);
                    }
                }
            }
    }
}
