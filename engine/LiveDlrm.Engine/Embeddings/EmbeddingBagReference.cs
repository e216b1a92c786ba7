using System.Numerics;

namespace LiveDlrm.Embeddings;

/// <summary>The plain scalar embedding bag: one row at a time, dequantised exactly as <see cref="EmbeddingTable.ReadRow"/>,
/// accumulated in fp32 in index order. The oracle every optimised kernel and backend is tested against.</summary>
internal static class EmbeddingBagReference
{
    public static void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
        => Forward<long, long>(table, indices, offsets, output, pooling, weights);

    public static void Forward(EmbeddingTable table, ReadOnlySpan<int> indices, ReadOnlySpan<int> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
        => Forward<int, int>(table, indices, offsets, output, pooling, weights);

    static void Forward<TIndex, TOffset>(EmbeddingTable table, ReadOnlySpan<TIndex> indices, ReadOnlySpan<TOffset> offsets, Span<float> output,
                                         PoolingMode pooling, ReadOnlySpan<float> weights)
        where TIndex : unmanaged, IBinaryInteger<TIndex>
        where TOffset : unmanaged, IBinaryInteger<TOffset>
    {
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        int dim = table.Dim;
        Span<float> row = dim <= 1024 ? stackalloc float[dim] : new float[dim];
        for (int b = 0; b < bags; b++)
        {
            int start = int.CreateTruncating(offsets[b]), end = int.CreateTruncating(offsets[b + 1]);
            var acc = output.Slice(b * dim, dim);
            acc.Clear();
            for (int j = start; j < end; j++)
            {
                table.ReadRow(long.CreateTruncating(indices[j]), row);
                float w = pooling == PoolingMode.WeightedSum ? weights[j] : 1f;
                for (int d = 0; d < dim; d++) acc[d] += w * row[d];
            }
            if (pooling == PoolingMode.Mean && end > start)
            {
                float inv = 1f / (end - start);
                for (int d = 0; d < dim; d++) acc[d] *= inv;
            }
        }
    }
}
