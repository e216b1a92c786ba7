using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Optimizer state carried into and out of adapter slots: an adapter row starts from its row's stored
/// row-wise Adagrad accumulator (<see cref="TableAdapter.RowState"/>), a merged row writes its accumulator back, and
/// B's Adagrad state starts from <see cref="AdapterOptions.BAdagradInitialAccumulator"/>.</summary>
internal class RowStateTests
{
    const int Rows = 64, Dim = 8, Rank = 4;
    const float LrA = 0.1f, LrB = 0.05f;

    static AdapterOptions Options(float bInitial = 0f) => new()
    {
        InitialRank = Rank, MaxRank = Rank, BudgetFraction = 0.9, Optimizer = AdapterOptimizer.Adagrad,
        LearningRateA = LrA, LearningRateB = LrB, AdagradInitialAccumulator = 0.001f, BAdagradInitialAccumulator = bInitial,
    };

    /// <summary>dL/dA of a row that is alone in its bag with pooled gradient <paramref name="grad"/> (sum pooling): g·Bᵀ.</summary>
    static double[] RowGradient(float[] b, float[] grad)
    {
        var g = new double[Rank];
        for (int k = 0; k < Rank; k++)
            for (int d = 0; d < Dim; d++) g[k] += b[k * Dim + d] * grad[d];
        return g;
    }

    static float[] ReadA(TableAdapter adapter, long row)
    {
        var a = new float[adapter.Options.MaxRank];
        Assert.That(adapter.ReadRow(row, a), Is.EqualTo(Rank), $"row {row} has an adapter row");
        return a[..Rank];
    }

    [Test]
    public void ARowStartsFromItsStoredAccumulatorAndAMergedRowKeepsIt()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var adapter = new TableAdapter(table, Options());
        var stored = new float[Rows];
        stored[3] = 4f;        // a row the base trained a lot: small steps
        stored[5] = 0f;        // a row the base never trained: its first step is lr-sized, as the base trainer's would be
        adapter.RowState = new RowAccumulators(stored);
        float[] b = adapter.CopyB(out _);
        var rng = new Random(9);
        float[] grad = LoraTestData.RandomVector(rng, Dim, 0.01);
        // Two bags, one row each, the same pooled gradient.
        Assert.That(adapter.ApplyGradients([3L, 5L], [0L, 1L, 2L], [.. grad, .. grad]), Is.True);

        double[] g = RowGradient(b, grad);
        double meanSquare = g.Sum(x => x * x) / Rank;
        float[] a3 = ReadA(adapter, 3), a5 = ReadA(adapter, 5);
        for (int k = 0; k < Rank; k++)
        {
            double expected3 = -LrA * g[k] / (Math.Sqrt(4 + meanSquare) + 1e-8);
            double expected5 = -LrA * g[k] / (Math.Sqrt(meanSquare) + 1e-8);
            Assert.That(a3[k], Is.EqualTo(expected3).Within(1e-5 * (1 + Math.Abs(expected3))), $"row 3, A[{k}]");
            Assert.That(a5[k], Is.EqualTo(expected5).Within(1e-4 * Math.Abs(expected5)), $"row 5, A[{k}]");
        }
        Assert.That(Math.Abs(a5[0]), Is.GreaterThan(10 * Math.Abs(a3[0])), "the untrained row moves much further");

        Assert.That(adapter.MergeOldest(adapter.ActiveRows), Is.EqualTo(2));
        Assert.That(adapter.RowState[3], Is.EqualTo(4 + meanSquare).Within(1e-5), "row 3 stored its accumulator on merge");
        Assert.That(adapter.RowState[5], Is.EqualTo(meanSquare).Within(1e-6 + 1e-4 * meanSquare), "row 5 stored its accumulator on merge");

        // Re-admitted, row 5 continues from the stored value rather than from 0 again.
        b = adapter.CopyB(out _);
        Assert.That(adapter.ApplyGradients([5L], [0L, 1L], grad), Is.True);
        double[] g2 = RowGradient(b, grad);
        double acc = adapter.RowState[5] + g2.Sum(x => x * x) / Rank;
        float[] again = ReadA(adapter, 5);
        for (int k = 0; k < Rank; k++)
        {
            double expected = -LrA * g2[k] / (Math.Sqrt(acc) + 1e-8);
            Assert.That(again[k], Is.EqualTo(expected).Within(1e-4 * Math.Abs(expected) + 1e-9), $"re-admitted row 5, A[{k}]");
        }
    }

    [Test]
    public void WithoutRowStateEveryRowStartsFromTheInitialAccumulator()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var adapter = new TableAdapter(table, Options());
        float[] b = adapter.CopyB(out _);
        float[] grad = LoraTestData.RandomVector(new Random(9), Dim, 0.01);
        Assert.That(adapter.ApplyGradients([5L], [0L, 1L], grad), Is.True);
        double[] g = RowGradient(b, grad);
        double acc = 0.001 + g.Sum(x => x * x) / Rank;
        float[] a = ReadA(adapter, 5);
        for (int k = 0; k < Rank; k++)
            Assert.That(a[k], Is.EqualTo(-LrA * g[k] / (Math.Sqrt(acc) + 1e-8)).Within(1e-4 * Math.Abs(a[k]) + 1e-9), $"A[{k}]");
    }

    [Test]
    public void BStartsFromItsInitialAccumulator([Values(0f, 1e-3f)] float bInitial)
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var adapter = new TableAdapter(table, Options(bInitial));
        var rng = new Random(4);
        var a = LoraTestData.RandomVector(rng, Rank, 0.5);
        adapter.SetRow(7, a);
        float[] b0 = adapter.CopyB(out _);
        float[] grad = LoraTestData.RandomVector(rng, Dim, 0.01);
        Assert.That(adapter.ApplyGradients([7L], [0L, 1L], grad), Is.True);
        float[] b1 = adapter.CopyB(out _);
        for (int k = 0; k < Rank; k++)
            for (int d = 0; d < Dim; d++)
            {
                double dB = a[k] * grad[d];
                double expected = b0[k * Dim + d] - LrB * dB / (Math.Sqrt(bInitial + dB * dB) + 1e-8);
                Assert.That(b1[k * Dim + d], Is.EqualTo(expected).Within(1e-5 * (1 + Math.Abs(expected))), $"B[{k},{d}]");
            }
    }

    [Test]
    public void RowStateOfAnotherTableSizeIsRefused()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var adapter = new TableAdapter(table, Options());
        var e = Assert.Throws<ArgumentException>(() => adapter.RowState = new RowAccumulators(new float[Rows + 1]));
        Assert.That(e!.Message, Does.Contain("row state holds 65 rows"));
        Assert.Throws<ArgumentException>(() => _ = new RowAccumulators([1f, float.NaN]));
    }
}
