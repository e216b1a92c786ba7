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
}
