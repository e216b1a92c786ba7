using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>The adapter-term kernel (what the host adds on top of a PIM-pooled base) and its scalar reference against
/// the naive s_b·Σ_j w_j A[i_j]·B in double; base + term must equal the fused lookup.</summary>
internal class LoraAdapterTermTests
{
    /// <summary>(dim, rank): ranks ≤ 8 and 9..16 use the two register accumulators, 20 the in-memory path; the B
    /// product's 64-column blocks (64, 67, 136), single vectors (16, 24, 136) and scalar tails (5, 67, 136).</summary>
    static readonly (int Dim, int Rank)[] Shapes = [(5, 3), (16, 8), (16, 12), (24, 16), (64, 16), (67, 16), (136, 20)];

    /// <summary>The term is added on top of whatever the output holds (here a recognisable base of 10 + element index).</summary>
    [Test]
    public void TermEqualsTheNaiveSumForEveryPooling([Values] PoolingMode pooling, [ValueSource(nameof(Shapes))] (int Dim, int Rank) shape)
    {
        var (dim, rank) = shape;
        var rng = new Random(dim * 3 + (int)pooling + rank * 101);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 1500, dim, seed: dim);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MinRank = 1, MaxRank = rank, BudgetFraction = 1.0 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 60);
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 70, 9, hot, pooling == PoolingMode.WeightedSum);
        var expected = NaiveTerm(adapter, batch, pooling);
        for (int i = 0; i < expected.Length; i++) expected[i] += 10 + i;

        var reference = BaseFilled(batch.Bags * dim, extra: 0);
        LoraAdapterTermReference.Add(adapter, batch.Indices, batch.Offsets, reference, pooling, batch.Weights);
        LoraTestData.AssertClose(reference, expected, 1e-6, "reference");
        var actual = BaseFilled(batch.Bags * dim, extra: 3);
        LoraAdapterTerm.Add(adapter, batch.Indices, batch.Offsets, actual, pooling, batch.Weights, new EmbeddingWorkerPool(0));
        LoraTestData.AssertClose(actual, expected, 1e-6, "kernel");
        Assert.That(actual[^3..], Is.EqualTo(new[] { -7f, -7f, -7f }), "the kernel wrote past the last bag");
    }

    /// <summary>Plain base lookup + term = the fused LoRA lookup, also on a worker pool above the parallel threshold.</summary>
    [Test]
    public void BasePlusTermEqualsTheFusedLookup([Values(PoolingMode.Sum, PoolingMode.Mean)] PoolingMode pooling)
    {
        const int dim = 16;
        var rng = new Random(4);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 5000, dim, seed: 8);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.5 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 300);
        var batch = LoraTestData.RandomBatch(rng, table.Rows, 1500, 12, hot, weighted: false);
        Assert.That(batch.Indices.Length, Is.GreaterThan(EmbeddingBag.ParallelThresholdLookups));
        using var pool = new EmbeddingWorkerPool(1);
        var fused = new float[batch.Bags * dim];
        LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, fused, pooling, pool: pool);
        var split = new float[batch.Bags * dim];
        EmbeddingBag.Forward(table, batch.Indices, batch.Offsets, split, pooling, pool: pool);
        LoraAdapterTerm.Add(adapter, batch.Indices, batch.Offsets, split, pooling, pool: pool);
        LoraTestData.AssertClose(split, fused.Select(x => (double)x).ToArray(), 1e-5, "base + term vs fused");
    }

    [Test]
    public void AnEmptyAdapterAddsNothing()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 100, 8, seed: 2);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.5 });
        var batch = LoraTestData.RandomBatch(new Random(1), table.Rows, 20, 6, [], weighted: false);
        var output = BaseFilled(20 * 8, extra: 0);
        LoraAdapterTerm.Add(adapter, batch.Indices, batch.Offsets, output, PoolingMode.Mean);
        Assert.That(output, Is.EqualTo(BaseFilled(20 * 8, extra: 0)));
    }

    [Test]
    public void BadInputThrowsBeforeAnythingIsAdded()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, 100, 8, seed: 2);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.5 });
        LoraTestData.FillAdapter(adapter, new Random(3), 10);
        var output = BaseFilled(16, extra: 0);
        Assert.That(() => LoraAdapterTerm.Add(adapter, [1, 2, 100], [0, 2, 3], output), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("100"));
        Assert.That(() => LoraAdapterTerm.Add(adapter, [1, 2], [0, 2], output, PoolingMode.WeightedSum), Throws.ArgumentException);
        Assert.That(output, Is.EqualTo(BaseFilled(16, extra: 0)));
    }

    static float[] BaseFilled(int length, int extra)
    {
        var output = new float[length + extra];
        for (int i = 0; i < length; i++) output[i] = 10 + i;
        output.AsSpan(length).Fill(-7f);
        return output;
    }

    static double[] NaiveTerm(TableAdapter adapter, LoraTestData.Batch batch, PoolingMode pooling)
    {
        int dim = adapter.Table.Dim;
        var b = adapter.CopyB(out _);
        var a = new float[adapter.Options.MaxRank];
        var term = new double[batch.Bags * dim];
        for (int bag = 0; bag < batch.Bags; bag++)
        {
            long start = batch.Offsets[bag], end = batch.Offsets[bag + 1];
            double scale = pooling == PoolingMode.Mean && end > start ? 1.0 / (end - start) : 1;
            for (long j = start; j < end; j++)
            {
                int r = adapter.ReadRow(batch.Indices[j], a);
                double w = (pooling == PoolingMode.WeightedSum ? batch.Weights[j] : 1) * scale;
                for (int k = 0; k < r; k++)
                    for (int d = 0; d < dim; d++) term[bag * dim + d] += w * a[k] * b[k * dim + d];
            }
        }
        return term;
    }
}
