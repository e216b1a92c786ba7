using LiveDlrm.Data;

namespace LiveDlrm.Online;

/// <summary>One served event as the trainer needs it: its features, and with data reuse the pooled embeddings the
/// serving forward computed (table-major per event, <c>[T × d]</c>) and its dense activations (see
/// <see cref="Activations"/>). The label is set when feedback arrives.</summary>
public sealed class ServedEvent
{
    public long RequestId { get; }
    public long Timestamp { get; }
    public float[] Dense { get; }
    /// <summary>Per table, the indices of this event's bag.</summary>
    public long[][] Bags { get; }
    /// <summary>Pooled embeddings as served (<c>[T × d]</c>), or null when data reuse is off: the trainer then
    /// re-pools through the live adapters.</summary>
    public float[]? Pooled { get; }
    /// <summary>Dense activations of the serving forward, what the trainer's backward through the frozen dense part
    /// needs (<see cref="FrozenDenseBackward"/>): the bottom-MLP output (d floats), then each top hidden layer's
    /// output after its ReLU (TopMlp[0], ..., TopMlp[^2] floats). Null when not kept.</summary>
    public float[]? Activations { get; }
    public float Label { get; internal set; } = float.NaN;

    public ServedEvent(long requestId, long timestamp, float[] dense, long[][] bags, float[]? pooled, float[]? activations = null)
    {
        RequestId = requestId;
        Timestamp = timestamp;
        Dense = dense ?? throw new ArgumentNullException(nameof(dense));
        Bags = bags ?? throw new ArgumentNullException(nameof(bags));
        Pooled = pooled;
        Activations = activations;
    }

    /// <summary>Copies event <paramref name="row"/> of <paramref name="batch"/>; <paramref name="pooled"/> is the
    /// batch's table-major <c>[T, B, d]</c> pooled output (empty = no reuse); <paramref name="activations"/> the
    /// event's own dense activations (copied; empty = none kept).</summary>
    public static ServedEvent FromBatch(EventBatch batch, int row, ReadOnlySpan<float> pooled, int dim, ReadOnlySpan<float> activations = default)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int tables = batch.SparseCount, b = batch.Count;
        var bags = new long[tables][];
        for (int t = 0; t < tables; t++) bags[t] = batch.Bag(t, row).ToArray();
        float[]? p = null;
        if (!pooled.IsEmpty)
        {
            p = new float[tables * dim];
            for (int t = 0; t < tables; t++) pooled.Slice((t * b + row) * dim, dim).CopyTo(p.AsSpan(t * dim, dim));
        }
        return new ServedEvent(batch.RequestIds[row], batch.Timestamps[row], batch.DenseRow(row).ToArray(), bags, p,
                               activations.IsEmpty ? null : activations.ToArray());
    }
}
