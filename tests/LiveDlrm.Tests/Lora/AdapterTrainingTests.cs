using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>The sparse optimizer step against the formulas computed naively, learning actually reducing a loss, and
/// rejection of non-finite steps.</summary>
internal class AdapterTrainingTests
{
    const int Rows = 120, Dim = 12, Rank = 3;

    static (double[][] A, double[] B) Dense(TableAdapter adapter)
    {
        var a = new double[adapter.Table.Rows][];
        var buffer = new float[adapter.Options.MaxRank];
        for (long i = 0; i < a.Length; i++)
        {
            int r = adapter.ReadRow(i, buffer);
            a[i] = new double[Rank];
            for (int k = 0; k < r; k++) a[i][k] = buffer[k];
        }
        return (a, adapter.CopyB(out _).Select(x => (double)x).ToArray());
    }

    /// <summary>dA per row and dB, straight from the definitions.</summary>
    static (Dictionary<long, double[]> dA, double[] dB) NaiveGradients(double[][] a, double[] b, LoraTestData.Batch batch, float[] grad, PoolingMode pooling)
    {
        var dA = new Dictionary<long, double[]>();
        var dB = new double[Rank * Dim];
        for (int bag = 0; bag < batch.Bags; bag++)
        {
            long start = batch.Offsets[bag], end = batch.Offsets[bag + 1];
            if (end == start) continue;
            double s = pooling == PoolingMode.Mean ? 1.0 / (end - start) : 1.0;
            var pooledA = new double[Rank];
            for (long j = start; j < end; j++)
            {
                double w = pooling == PoolingMode.WeightedSum ? batch.Weights[j] : 1;
                long i = batch.Indices[j];
                if (!dA.TryGetValue(i, out var g)) dA[i] = g = new double[Rank];
                for (int k = 0; k < Rank; k++)
                {
                    double bg = 0;
                    for (int d = 0; d < Dim; d++) bg += b[k * Dim + d] * grad[bag * Dim + d];
                    g[k] += s * w * bg;
                    pooledA[k] += s * w * a[i][k];
                }
            }
            for (int k = 0; k < Rank; k++)
                for (int d = 0; d < Dim; d++) dB[k * Dim + d] += pooledA[k] * grad[bag * Dim + d];
        }
        return (dA, dB);
    }

    /// <param name="maxBagLength">6: one chunk of pass 1's slot lookups; 300: bags longer than a chunk (128 indices)
    /// and a step of many chunks.</param>
    [Test]
    public void OneStepMatchesTheNaiveUpdate([Values] PoolingMode pooling, [Values] AdapterOptimizer optimizer, [Values(0f, 0.1f)] float initialAccumulator,
                                             [Values(6, 300)] int maxBagLength)
    {
        var rng = new Random(11 + (int)pooling);
        int rows = maxBagLength > Rows ? 20_000 : Rows;   // long bags: enough rows and slots that nothing is evicted
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, rows, Dim, seed: 5);
        var options = new AdapterOptions { InitialRank = Rank, MaxRank = Rank, BudgetFraction = 0.9, Optimizer = optimizer, LearningRateA = 0.1f, LearningRateB = 0.05f, AdagradInitialAccumulator = initialAccumulator };
        using var adapter = new TableAdapter(table, options);
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 20);
        var batch = LoraTestData.RandomBatch(rng, rows, 16, maxBagLength, hot, pooling == PoolingMode.WeightedSum);
        var grad = LoraTestData.RandomVector(rng, batch.Bags * Dim);
        var (a0, b0) = Dense(adapter);
        var (dA, dB) = NaiveGradients(a0, b0, batch, grad, pooling);

        Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, grad, pooling, batch.Weights), Is.True);
        Assert.That(adapter.Step, Is.EqualTo(1));
        var (a1, b1) = Dense(adapter);
        double eps = options.AdagradEpsilon;
        for (long i = 0; i < rows; i++)
        {
            for (int k = 0; k < Rank; k++)
            {
                double expected = a0[i][k];
                if (dA.TryGetValue(i, out var g))
                {
                    double step = options.LearningRateA;
                    if (optimizer == AdapterOptimizer.Adagrad) step /= Math.Sqrt(initialAccumulator + g.Sum(x => x * x) / Rank) + eps;   // acc = initial + mean(g²)
                    expected -= step * g[k];
                }
                Assert.That(a1[i][k], Is.EqualTo(expected).Within(1e-4 * (1 + Math.Abs(expected))), $"A[{i}][{k}]");
            }
        }
        for (int e = 0; e < Rank * Dim; e++)
        {
            double step = options.LearningRateB;
            if (optimizer == AdapterOptimizer.Adagrad) step /= Math.Sqrt(dB[e] * dB[e]) + eps;
            double expected = b0[e] - step * dB[e];
            Assert.That(b1[e], Is.EqualTo(expected).Within(1e-4 * (1 + Math.Abs(expected))), $"B[{e}]");
        }
        Assert.That(adapter.ActiveRows, Is.EqualTo(hot.Concat(batch.Indices).Distinct().Count()), "every touched row has a slot");
    }

    /// <summary>Fit pooled outputs to random targets through the adapter only: the squared error must fall a lot.
    /// Catches sign, scaling and B/A coupling mistakes the one-step test could share with its oracle.</summary>
    [Test]
    public void TrainingThroughTheLookupReducesTheLoss([Values(EmbeddingStorage.Fp32, EmbeddingStorage.Int8Rowwise)] EmbeddingStorage storage)
    {
        var rng = new Random(2);
        using var table = LoraTestData.Table(storage, 400, 16, seed: 8);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 16, MaxRank = 16, BudgetFraction = 0.9, LearningRateA = 0.2f, LearningRateB = 0.05f });
        var batch = LoraTestData.RandomBatch(rng, 60, 32, 4, Array.Empty<long>(), weighted: false);   // rows 0..59 only
        var target = LoraTestData.RandomVector(rng, batch.Bags * 16, 2);
        var output = new float[target.Length];
        var grad = new float[target.Length];
        double Loss()
        {
            LoraEmbeddingBag.Forward(adapter, batch.Indices, batch.Offsets, output, PoolingMode.Mean);
            double l = 0;
            for (int i = 0; i < output.Length; i++) { grad[i] = output[i] - target[i]; l += 0.5 * grad[i] * grad[i]; }
            return l;
        }
        double first = Loss();
        for (int step = 0; step < 300; step++)
        {
            Loss();
            Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, grad, PoolingMode.Mean), Is.True);
        }
        double last = Loss();
        Assert.That(last, Is.LessThan(0.2 * first), $"loss {first:F3} → {last:F3}");
    }

    public enum Poison { NaNGradient, InfGradient, InfWeight, OverflowingGradient }

    [Test]
    public void NonFiniteStepIsRejectedAndChangesNothing([Values] Poison poison)
    {
        var rng = new Random(4);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp16, Rows, Dim, seed: 6);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = Rank, MaxRank = Rank, BudgetFraction = 0.9 });
        long[] hot = LoraTestData.FillAdapter(adapter, rng, 10);
        var batch = LoraTestData.RandomBatch(rng, Rows, 12, 5, hot, weighted: true);
        var grad = LoraTestData.RandomVector(rng, batch.Bags * Dim);
        switch (poison)
        {
            case Poison.NaNGradient: grad[rng.Next(grad.Length)] = float.NaN; break;
            case Poison.InfGradient: grad[^1] = float.NegativeInfinity; break;
            case Poison.InfWeight: batch.Weights[rng.Next(batch.Weights.Length)] = float.PositiveInfinity; break;
            case Poison.OverflowingGradient: Array.Fill(grad, 3e38f); break;   // finite, but B·g overflows
        }
        var before = LoraTestData.EffectiveRows(adapter);
        var bBefore = adapter.CopyB(out _);
        int activeBefore = adapter.ActiveRows;

        Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, grad, PoolingMode.WeightedSum, batch.Weights), Is.False);
        Assert.That(adapter.RejectedSteps, Is.EqualTo(1));
        Assert.That(adapter.Step, Is.Zero);
        Assert.That(adapter.CopyB(out _), Is.EqualTo(bBefore));
        Assert.That(adapter.ActiveRows, Is.EqualTo(activeBefore));
        Assert.That(LoraTestData.MaxAbsDiff(before, LoraTestData.EffectiveRows(adapter)), Is.Zero);

        // and the adapter still trains afterwards
        var clean = LoraTestData.RandomVector(rng, batch.Bags * Dim);
        Assert.That(adapter.ApplyGradients(batch.Indices, batch.Offsets, clean, PoolingMode.WeightedSum, LoraTestData.RandomVector(rng, batch.Indices.Length)), Is.True);
    }

    [Test]
    public void BadShapesThrowNamingTheProblem()
    {
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 1);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = Rank, MaxRank = Rank, BudgetFraction = 0.9 });
        long[] indices = { 1, 2 }, offsets = { 0, 2 };
        Assert.That(() => adapter.ApplyGradients(indices, offsets, new float[Dim + 1]), Throws.ArgumentException.With.Message.Contains("bagGradients"));
        Assert.That(() => adapter.ApplyGradients(new long[] { 1, Rows }, offsets, new float[Dim]), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => adapter.SetRow(3, new float[Rank + 1]), Throws.ArgumentException.With.Message.Contains("rank"));
        Assert.That(() => adapter.SetRow(3, new[] { 1f, float.NaN, 0f }), Throws.ArgumentException.With.Message.Contains("non-finite"));
        Assert.That(adapter.ActiveRows, Is.Zero);
        Assert.That(() => new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = Dim + 1 }), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("MaxRank"));
        Assert.That(() => new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 8, BudgetFraction = 0.001 }), Throws.ArgumentException.With.Message.Contains("budget"));
        Assert.That(() => new TableAdapter(table, new AdapterOptions { EnergyToKeep = 1.5, MaxRank = 8, InitialRank = 4 }), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("EnergyToKeep"));
    }
}
