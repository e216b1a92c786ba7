using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
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

    // ------------------------------------------------------------------ prefetch (trainer side)
    // The trainer reads an event a label delay after it was served, by then in L3 or the serving core's cache.
    // Profiled on the replay, the reuse backward spent most of its time waiting on these loads (the Pooled and
    // Activations reads), and TrainOn on the Bags. The trainer walks a batch in order, so it asks for an event's
    // memory a few events ahead, in three stages because each level's address is in the level above it: the object,
    // then its arrays, then the bags' index arrays. Only prefetches: an address the GC has moved since is harmless.

    /// <summary>Stage 1: the event object itself (its fields hold the array references).</summary>
    internal static unsafe void PrefetchObject(ServedEvent e)
    {
        if (Sse.IsSupported) Sse.Prefetch0((void*)Unsafe.As<ServedEvent, nint>(ref e));
    }

    /// <summary>Stage 2: the arrays (the object must be cached by now). Pooled and Activations go to L2 only: the
    /// backward reads them after the whole batch is assembled, and a batch of them (~160 KiB at 128 events) would
    /// only thrash L1.</summary>
    internal unsafe void PrefetchArrays()
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch0(Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Dense)));
        Sse.Prefetch0(Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bags)));
        PrefetchLines(Pooled);
        PrefetchLines(Activations);

        static void PrefetchLines(float[]? a)
        {
            if (a is null) return;
            byte* p = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));
            for (int offset = 0; offset < a.Length * sizeof(float); offset += 64) Sse.Prefetch1(p + offset);
        }
    }

    /// <summary>Stage 3: each bag's index array (the Bags array must be cached by now).</summary>
    internal unsafe void PrefetchBags()
    {
        if (!Sse.IsSupported) return;
        foreach (var bag in Bags) Sse.Prefetch0(Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(bag)));
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
