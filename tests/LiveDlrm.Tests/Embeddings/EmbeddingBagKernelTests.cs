using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Every kernel path (each ISA level the CPU supports, each row format, int and long indices, every
/// pooling, single- and multi-threaded) against the scalar reference.</summary>
[TestFixture]
public class EmbeddingBagKernelTests
{
    static readonly int[] Dims = [1, 3, 16, 17, 64, 100, 128, 256];
    static readonly KernelIsa[] Isas = Enum.GetValues<KernelIsa>();

    static IEnumerable<TestCaseData> Cases()
    {
        foreach (var isa in Isas)
            foreach (var storage in Enum.GetValues<EmbeddingStorage>())
                foreach (int dim in Dims)
                    yield return new TestCaseData(isa, storage, dim).SetName($"{isa}_{storage}_dim{dim}");
    }

    static EmbeddingWorkerPool _pool = null!;

    [OneTimeSetUp] public void StartPool() => _pool = new EmbeddingWorkerPool(2);
    [OneTimeTearDown] public void StopPool() => _pool.Dispose();

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(KernelIsa isa, EmbeddingStorage storage, int dim)
    {
        if (!EmbeddingKernels.IsSupported(isa)) Assert.Ignore($"{isa} not supported here");
        using var scope = EmbeddingKernels.Force(isa);
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
                string what = $"{isa} {storage} dim {dim} {pooling} threads {pool.ThreadCount + 1}";
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
        foreach (var isa in Isas.Where(EmbeddingKernels.IsSupported))
            foreach (int dim in Dims)
            {
                using var scope = EmbeddingKernels.Force(isa);
                using var table = EmbeddingTestData.RandomTable("one-row", 1, dim, storage, seed: dim);
                long[] indices = [0, 0, 0, 0, 0];
                long[] offsets = [0, 1, 1, 5];
                float[] weights = [0.5f, 2f, -1f, 3f, 0.25f];
                foreach (var pooling in Enum.GetValues<PoolingMode>())
                {
                    var output = new float[3 * dim + 8];
                    output.AsSpan().Fill(float.NaN);
                    EmbeddingBag.Forward(table, indices, offsets, output.AsSpan(0, 3 * dim), pooling, pooling == PoolingMode.WeightedSum ? weights : default, _pool);
                    EmbeddingTestData.AssertMatchesReference(table, indices, offsets, weights, pooling, output, 1e-5, $"{isa} {storage} dim {dim} {pooling}");
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
        foreach (var isa in Isas.Where(EmbeddingKernels.IsSupported))
        {
            using var scope = EmbeddingKernels.Force(isa);
            EmbeddingBag.Forward(table, indices, offsets, output, PoolingMode.Sum, default, _pool);
            for (int bits = 0; bits < 65536; bits++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits), actual = output[bits];
                bool same = float.IsNaN(expected) ? float.IsNaN(actual) : actual == expected;
                if (!same) Assert.Fail($"{isa}: half 0x{bits:X4} widened to {actual}, expected {expected}");
            }
        }
    }
}
