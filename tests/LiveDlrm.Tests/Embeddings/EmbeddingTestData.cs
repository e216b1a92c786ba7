using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Random tables and CSR batches for the kernel tests, plus the one comparison helper.</summary>
internal static class EmbeddingTestData
{
    public static float[] RandomValues(int count, int seed, float range = 2f)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float)(rng.NextDouble() * 2 - 1) * range;
        return v;
    }

    public static EmbeddingTable RandomTable(string name, long rows, int dim, EmbeddingStorage storage, int seed)
        => EmbeddingTable.FromFp32(name, RandomValues(checked((int)(rows * dim)), seed), dim, storage);

    /// <summary>A CSR batch with bag lengths in [0, maxPooling] (every third bag has a chance of being empty),
    /// ids uniform over the table, the last row always used (it ends the native buffer).</summary>
    public static (long[] Indices, long[] Offsets, float[] Weights) RandomBatch(long rows, int bags, int maxPooling, int seed)
    {
        var rng = new Random(seed);
        var offsets = new long[bags + 1];
        var indices = new List<long>();
        for (int b = 0; b < bags; b++)
        {
            int len = b % 3 == 1 ? rng.Next(0, 2) : rng.Next(1, maxPooling + 1);
            for (int j = 0; j < len; j++) indices.Add(rng.NextInt64(rows));
            offsets[b + 1] = indices.Count;
        }
        if (indices.Count > 0) indices[^1] = rows - 1;
        var weights = new float[indices.Count];
        for (int i = 0; i < weights.Length; i++) weights[i] = (float)(rng.NextDouble() * 3 - 1);
        return (indices.ToArray(), offsets, weights);
    }

    /// <summary>|value| of each element of a row, or for int8 rows |q·scale| + |bias|: the dequantisation itself
    /// is a sum whose parts may cancel, and the kernels may add the parts in another order.</summary>
    static void TermMagnitudes(EmbeddingTable table, long rowIndex, float[] row)
    {
        if (table.Storage != EmbeddingStorage.Int8Rowwise)
        {
            table.ReadRow(rowIndex, row);
            for (int d = 0; d < row.Length; d++) row[d] = Math.Abs(row[d]);
            return;
        }
        var stored = table.StoredRow(rowIndex);
        float scale = BitConverter.ToSingle(stored.Slice(table.Dim, 4)), bias = BitConverter.ToSingle(stored.Slice(table.Dim + 4, 4));
        for (int d = 0; d < row.Length; d++) row[d] = Math.Abs(stored[d] * scale) + Math.Abs(bias);
    }

    public static int[] ToInt(long[] values) => values.Select(v => checked((int)v)).ToArray();

    /// <summary>The reference output of a batch and, per element, the scale its error is measured against: the sum
    /// of the absolute terms (an honest scale for a sum that may cancel), divided by the bag length for mean.</summary>
    public static (float[] Expected, double[] Scale) Reference(EmbeddingTable table, long[] indices, long[] offsets, float[] weights, PoolingMode pooling)
    {
        int dim = table.Dim, bags = offsets.Length - 1;
        var expected = new float[bags * dim];
        var w = pooling == PoolingMode.WeightedSum ? weights : [];
        EmbeddingBagReference.Forward(table, indices, offsets, expected, pooling, w);
        var row = new float[dim];
        var scale = new double[bags * dim];
        for (int b = 0; b < bags; b++)
        {
            long start = offsets[b], end = offsets[b + 1];
            for (long j = start; j < end; j++)
            {
                TermMagnitudes(table, indices[j], row);
                double wj = pooling == PoolingMode.WeightedSum ? Math.Abs(weights[j]) : 1;
                for (int d = 0; d < dim; d++) scale[b * dim + d] += wj * row[d];
            }
            if (pooling == PoolingMode.Mean && end > start)
                for (int d = 0; d < dim; d++) scale[b * dim + d] /= end - start;
        }
        return (expected, scale);
    }

    /// <summary>Asserts |actual − expected| ≤ relative · scale for every element (NaN fails).</summary>
    public static void AssertClose((float[] Expected, double[] Scale) reference, ReadOnlySpan<float> actual, int dim, double relative, string what)
    {
        for (int i = 0; i < reference.Expected.Length; i++)
        {
            float e = reference.Expected[i], a = actual[i];
            double tol = relative * reference.Scale[i] + 1e-30;
            if (!(Math.Abs(a - e) <= tol))
                Assert.Fail($"{what}: bag {i / dim} column {i % dim}: got {a}, reference {e}, tolerance {tol:G3}");
        }
    }

    public static void AssertMatchesReference(EmbeddingTable table, long[] indices, long[] offsets, float[] weights, PoolingMode pooling,
                                              ReadOnlySpan<float> actual, double relative, string what)
        => AssertClose(Reference(table, indices, offsets, weights, pooling), actual, table.Dim, relative, what);
}
