using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Small random tables, adapters and batches, plus the naive dense oracle W + A·B.</summary>
internal static class LoraTestData
{
    public static EmbeddingTable Table(EmbeddingStorage storage, int rows, int dim, int seed)
    {
        var rng = new Random(seed);
        var values = new float[rows * dim];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        return EmbeddingTable.FromFp32($"t{seed}", values, dim, storage);
    }

    public static float[] RandomVector(Random rng, int n, double scale = 1)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return v;
    }

    /// <summary>Gives <paramref name="count"/> distinct random rows a random A vector; returns them.</summary>
    public static long[] FillAdapter(TableAdapter adapter, Random rng, int count, double scale = 0.5)
    {
        var rows = new HashSet<long>();
        while (rows.Count < count) rows.Add(rng.NextInt64(adapter.Table.Rows));
        foreach (long r in rows) adapter.SetRow(r, RandomVector(rng, adapter.Rank, scale));
        return rows.ToArray();
    }

    public sealed record Batch(long[] Indices, long[] Offsets, float[] Weights, int Bags);

    /// <summary>A CSR batch with bag lengths 0..maxLen (empty bags included), indices drawn mostly from
    /// <paramref name="hot"/> so adapted rows are hit, duplicates within a bag allowed.</summary>
    public static Batch RandomBatch(Random rng, long rows, int bags, int maxLen, long[] hot, bool weighted)
    {
        var offsets = new long[bags + 1];
        var indices = new List<long>();
        for (int b = 0; b < bags; b++)
        {
            int len = rng.Next(maxLen + 1);
            for (int j = 0; j < len; j++)
                indices.Add(hot.Length > 0 && rng.Next(2) == 0 ? hot[rng.Next(hot.Length)] : rng.NextInt64(rows));
            offsets[b + 1] = indices.Count;
        }
        var weights = weighted ? RandomVector(rng, indices.Count, 2) : Array.Empty<float>();
        return new Batch(indices.ToArray(), offsets, weights, bags);
    }

    /// <summary>Dense effective rows W + A·B in double, from the table's stored (dequantised) W, the adapter's A rows and B.</summary>
    public static double[][] EffectiveRows(TableAdapter adapter)
    {
        var t = adapter.Table;
        var b = adapter.CopyB(out int rank);
        var w = new float[t.Dim];
        var a = new float[adapter.Options.MaxRank];
        var rows = new double[t.Rows][];
        for (long i = 0; i < t.Rows; i++)
        {
            t.ReadRow(i, w);
            var e = new double[t.Dim];
            for (int d = 0; d < t.Dim; d++) e[d] = w[d];
            int r = adapter.ReadRow(i, a);
            Assert.That(r, Is.EqualTo(0).Or.EqualTo(rank));
            for (int k = 0; k < r; k++)
                for (int d = 0; d < t.Dim; d++) e[d] += (double)a[k] * b[k * t.Dim + d];
            rows[i] = e;
        }
        return rows;
    }

    public static double[] NaivePooled(double[][] effective, Batch batch, PoolingMode pooling, int dim)
    {
        var output = new double[batch.Bags * dim];
        for (int b = 0; b < batch.Bags; b++)
        {
            long start = batch.Offsets[b], end = batch.Offsets[b + 1];
            for (long j = start; j < end; j++)
            {
                double w = pooling == PoolingMode.WeightedSum ? batch.Weights[j] : 1;
                for (int d = 0; d < dim; d++) output[b * dim + d] += w * effective[batch.Indices[j]][d];
            }
            if (pooling == PoolingMode.Mean && end > start)
                for (int d = 0; d < dim; d++) output[b * dim + d] /= end - start;
        }
        return output;
    }

    public static void AssertClose(ReadOnlySpan<float> actual, double[] expected, double tolerance, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            double diff = Math.Abs(actual[i] - expected[i]);
            if (diff > tolerance * (1 + Math.Abs(expected[i])))
                Assert.Fail($"{what}: element {i} is {actual[i]}, expected {expected[i]} (|diff| {diff:G3})");
        }
    }

    public static double MaxAbsDiff(double[][] x, double[][] y)
    {
        double m = 0;
        for (int i = 0; i < x.Length; i++)
            for (int d = 0; d < x[i].Length; d++) m = Math.Max(m, Math.Abs(x[i][d] - y[i][d]));
        return m;
    }
}
