using LiveDlrm.Embeddings;
using LiveDlrm.Runtime;
using TorchSharp;
using EmbeddingBag = LiveDlrm.Embeddings.EmbeddingBag;
using EmbeddingBagMode = TorchSharp.EmbeddingBagMode;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>fp32 sum and mean equal TorchSharp's EmbeddingBag on the same weights and batch (int64 ids; TorchSharp
/// takes offsets without the final CSR entry).</summary>
[TestFixture]
internal class EmbeddingBagTorchSharpTests
{
    [TestCase(PoolingMode.Sum, EmbeddingBagMode.Sum, 1)]
    [TestCase(PoolingMode.Sum, EmbeddingBagMode.Sum, 17)]
    [TestCase(PoolingMode.Sum, EmbeddingBagMode.Sum, 64)]
    [TestCase(PoolingMode.Mean, EmbeddingBagMode.Mean, 3)]
    [TestCase(PoolingMode.Mean, EmbeddingBagMode.Mean, 100)]
    [TestCase(PoolingMode.Mean, EmbeddingBagMode.Mean, 128)]
    public void MatchesTorchSharp(PoolingMode pooling, EmbeddingBagMode mode, int dim)
    {
        TorchRuntime.EnsureInitialised();
        const int rows = 300, bags = 150;
        var values = EmbeddingTestData.RandomValues(rows * dim, seed: dim);
        var (indices, offsets, _) = EmbeddingTestData.RandomBatch(rows, bags, maxPooling: 24, seed: dim + 1);
        using var table = EmbeddingTable.FromFp32("torch-parity", values, dim, EmbeddingStorage.Fp32);
        var ours = new float[bags * dim];
        using var pool = new EmbeddingWorkerPool(1);
        EmbeddingBag.Forward(table, indices, offsets, ours, pooling, default, pool);

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var weight = torch.tensor(values, new long[] { rows, dim });
        using var bag = torch.nn.EmbeddingBag_from_pretrained(weight, freeze: true, mode: mode);
        var input = torch.tensor(indices);
        var torchOffsets = torch.tensor(offsets[..^1]);
        var result = bag.forward(input, torchOffsets, null);
        Assert.That(result.shape, Is.EqualTo(new long[] { bags, dim }));
        var theirs = result.contiguous().data<float>().ToArray();

        // Scale of each element: Σ|terms| (divided by the bag length for mean), as for the reference comparison.
        for (int b = 0; b < bags; b++)
        {
            long n = offsets[b + 1] - offsets[b];
            for (int d = 0; d < dim; d++)
            {
                double scale = 0;
                for (long j = offsets[b]; j < offsets[b + 1]; j++) scale += Math.Abs(values[indices[j] * dim + d]);
                if (pooling == PoolingMode.Mean && n > 0) scale /= n;
                float a = ours[b * dim + d], e = theirs[b * dim + d];
                Assert.That(Math.Abs(a - e), Is.LessThanOrEqualTo(1e-5 * scale + 1e-30), $"bag {b} (len {n}) column {d}: ours {a}, TorchSharp {e}");
            }
        }
    }
}
