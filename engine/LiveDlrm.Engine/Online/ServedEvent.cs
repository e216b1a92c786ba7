using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Data;

namespace LiveDlrm.Online;

/// <summary>One served event as the trainer needs it: its features, and with data reuse the pooled embeddings the
/// serving forward computed (table-major per event, <c>[T × d]</c>) and its dense activations (see
/// <see cref="Activations"/>). The label is set when feedback arrives.
/// <para>An event made by <see cref="ServedRequestRing"/> is recycled: once trained on (or expired, or forgotten) it
/// goes back to its ring's free list and is refilled in place for a later request (<see cref="Refill"/>), so serving
/// allocates nothing per request once the ring is warm. Whoever takes an event from the ring owns it until it hands
/// it back (<see cref="ServedRequestRing.Recycle"/>); an event never handed back is simply collected.</para></summary>
internal sealed class ServedEvent
{
    public long RequestId { get; private set; }
    public long Timestamp { get; private set; }
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

    /// <summary>The ring this event was made by and goes back to, or null (made by its caller, never recycled).</summary>
    internal ServedRequestRing? Owner { get; private init; }
    /// <summary>On its owner's free list (guards against handing the same event back twice).</summary>
    internal bool IsFree { get; set; }

    /// <summary>An empty recyclable event of the given shape (<see cref="Refill"/> fills it).</summary>
    internal static ServedEvent Recyclable(ServedRequestRing owner, int denseCount, int tables, int pooledFloats, int activationFloats)
    {
        var bags = new long[tables][];
        for (int t = 0; t < tables; t++) bags[t] = [];
        return new ServedEvent(0, 0, new float[denseCount], bags, pooledFloats == 0 ? null : new float[pooledFloats],
                               activationFloats == 0 ? null : new float[activationFloats]) { Owner = owner };
    }

    /// <summary>Whether <see cref="Refill"/> can hold an event of this shape (<see cref="Pooled"/> and
    /// <see cref="Activations"/> have fixed lengths, 0 = not kept).</summary>
    internal bool Fits(int denseCount, int tables, int pooledFloats, int activationFloats) =>
        Dense.Length == denseCount && Bags.Length == tables && (Pooled?.Length ?? 0) == pooledFloats && (Activations?.Length ?? 0) == activationFloats;

    /// <summary>Overwrites this event with row <paramref name="row"/> of <paramref name="batch"/> (the arguments as for
    /// <see cref="FromBatch"/>; the shape must <see cref="Fits"/>). The arrays are reused; a bag's index array is
    /// replaced only when the bag's length differs from the previous request's.</summary>
    internal void Refill(EventBatch batch, int row, ReadOnlySpan<float> pooled, int dim, ReadOnlySpan<float> activations)
    {
        int tables = Bags.Length, b = batch.Count;
        RequestId = batch.RequestIds[row];
        Timestamp = batch.Timestamps[row];
        Label = float.NaN;
        batch.DenseRow(row).CopyTo(Dense);
        for (int t = 0; t < tables; t++)
        {
            var bag = batch.Bag(t, row);
            if (Bags[t].Length != bag.Length) Bags[t] = bag.ToArray();
            else bag.CopyTo(Bags[t]);
        }
        if (Pooled is { } p)
            for (int t = 0; t < tables; t++) pooled.Slice((t * b + row) * dim, dim).CopyTo(p.AsSpan(t * dim, dim));
        if (Activations is { } a) activations.CopyTo(a);
    }

    // ------------------------------------------------------------------ prefetch (trainer side)
    // The trainer reads an event a label delay after it was served, by then in L3 or the serving core's cache.
    // Profiled on the replay, the reuse backward spent most of its time waiting on these loads (the Pooled and
    // Activations reads), and TrainOn on the Bags. The trainer walks a batch in order, so it asks for an event's
    // memory a few events ahead, in three stages because each level's address is in the level above it: the object,
    // then its arrays, then the bags' index arrays. Only prefetches: an address the GC has moved since is harmless.

    /// <summary>Stage 1: the event object itself (its fields hold the array references).</summary>
    internal static void PrefetchObject(ServedEvent e) => PrefetchLines(e, 64);

    /// <summary>Stage 2: the arrays (the object must be cached by now), given the lengths the trainer expects of
    /// <see cref="Pooled"/> and <see cref="Activations"/>: an array's own Length is in the line being asked for, so
    /// reading it would wait for exactly the load this hides. Pooled and Activations go to L2 only: the backward
    /// reads them after the whole batch is assembled, and a batch of them (~160 KiB at 128 events) would only
    /// thrash L1.</summary>
    internal void PrefetchArrays(int pooledFloats, int activationFloats)
    {
        PrefetchLines(Dense, 64);
        PrefetchLines(Bags, 64);
        PrefetchLines(Pooled, ArrayDataOffset + pooledFloats * sizeof(float), toL2: true);
        PrefetchLines(Activations, ArrayDataOffset + activationFloats * sizeof(float), toL2: true);
    }

    /// <summary>Stage 3: each bag's index array (the Bags array must be cached by now).</summary>
    internal void PrefetchBags()
    {
        foreach (var bag in Bags) PrefetchLines(bag, 64);
    }

    const int ArrayDataOffset = 16;   // method table + length, before an array's first element (64-bit runtime)

    // The object's address without touching its memory (no null check or length read through it).
    static unsafe void PrefetchLines(object? o, int bytes, bool toL2 = false)
    {
        if (o is null || !Sse.IsSupported) return;
        byte* p = (byte*)Unsafe.As<object, nint>(ref o);
        for (int offset = 0; offset < bytes; offset += 64)
            if (toL2) Sse.Prefetch1(p + offset);
            else Sse.Prefetch0(p + offset);
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
