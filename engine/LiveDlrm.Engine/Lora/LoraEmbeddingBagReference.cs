using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The scalar twin of <see cref="LoraEmbeddingBag"/> and the oracle it is tested against: per index the
/// effective row W[i] + A[i]·B is formed on its own (no rank-space accumulation), from one consistent snapshot of
/// the slot, then pooled exactly as <see cref="EmbeddingBagReference"/> pools.</summary>
internal static unsafe class LoraEmbeddingBagReference
{
    public static void Forward(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        int dim = table.Dim;
        var g = adapter.Pin();
        try
        {
            float[] b = Volatile.Read(ref g.B);
            var row = new float[dim];
            var a = new float[g.Rank];
            fixed (float* pr = row)
            fixed (float* pa = a)
            {
                var spin = new SpinWait();
                for (int bag = 0; bag < bags; bag++)
                {
                    // Hot rows served from W are written without a slot: read the bag between two equal, even epochs.
                    int epoch = adapter.ServesHotRowsFromW ? Volatile.Read(ref *g.WriteEpochPointer) : 0;
                    if ((epoch & 1) != 0) { spin.SpinOnce(sleep1Threshold: -1); bag--; continue; }
                    int start = (int)offsets[bag], end = (int)offsets[bag + 1];
                    var acc = output.Slice(bag * dim, dim);
                    acc.Clear();
                    for (int j = start; j < end; j++)
                    {
                        long i = indices[j];
                        int slot = g.Find(i);
                        if (slot >= 0 && TableAdapter.ReadSlot(g, slot, i, table, pa, pr))
                        {
                            for (int d = 0; d < dim; d++)
                            {
                                float delta = 0;
                                for (int k = 0; k < g.Rank; k++) delta += a[k] * b[k * dim + d];
                                row[d] += delta;
                            }
                        }
                        else table.ReadRow(i, row);
                        float w = pooling == PoolingMode.WeightedSum ? weights[j] : 1f;
                        for (int d = 0; d < dim; d++) acc[d] += w * row[d];
                    }
                    if (pooling == PoolingMode.Mean && end > start)
                    {
                        float inv = 1f / (end - start);
                        for (int d = 0; d < dim; d++) acc[d] *= inv;
                    }
                    if (adapter.ServesHotRowsFromW)
                    {
                        Volatile.ReadBarrier();
                        if (Volatile.Read(ref *g.WriteEpochPointer) != epoch) bag--;
                    }
                }
            }
        }
        finally { TableAdapter.Unpin(g); }
    }
}
