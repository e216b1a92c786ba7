using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>Merge and eviction for one <see cref="TableAdapter"/> (trainer thread only): folds adapter rows into the
/// base table (W[i] += A[i]·B, quantised back) inside each slot's seqlock section and the generation's write epoch,
/// frees their slots, picks the least recently updated rows to evict, and tells the merge observer about each batch.</summary>
internal sealed unsafe class AdapterMerger(TableAdapter owner, EmbeddingTable table)
{
    readonly TableAdapter _owner = owner;
    readonly EmbeddingTable _table = table;
    readonly float[] _rowScratch = new float[table.Dim];
    IAdapterMergeObserver? _mergeObserver;

    /// <summary>Rows merged into the base so far.</summary>
    public long MergedRows { get; internal set; }   // internal set: restored with a saved adapter

    /// <summary>The observer told about every merge batch (see <see cref="IAdapterMergeObserver"/>), or null. One at a
    /// time: setting a second one throws. Set it before training starts; a merge in progress keeps the observer it began with.</summary>
    public IAdapterMergeObserver? Observer
    {
        get => Volatile.Read(ref _mergeObserver);
        set
        {
            if (value is null) { Volatile.Write(ref _mergeObserver, null); return; }
            var existing = Interlocked.CompareExchange(ref _mergeObserver, value, null);
            if (existing is not null && !ReferenceEquals(existing, value))
                throw new InvalidOperationException($"table '{_table.Name}': the adapter already has a merge observer");
        }
    }

    /// <summary>Merges every live slot of <paramref name="g"/> as one batch.</summary>
    public void MergeAllLive(AdapterGeneration g)
    {
        var live = new List<int>(g.Live);
        for (int s = 0; s < g.SlotCapacity; s++)
            if (g.Record(s)->IsLive) live.Add(s);
        MergeSlots(g, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(live));
    }

    /// <summary>Merges <paramref name="slots"/> as one batch, bracketed by the merge observer's two calls.</summary>
    public void MergeSlots(AdapterGeneration g, ReadOnlySpan<int> slots)
    {
        var observer = Volatile.Read(ref _mergeObserver);
        var rows = observer is null ? null : new long[slots.Length];
        int merged = 0;
        observer?.MergeStarting(_owner);
        try
        {
            g.BeginEpochWrite();
            try
            {
                for (int k = 0; k < slots.Length; k++)
                {
                    PrefetchMerge(g, slots, k);
                    long row = MergeSlot(g, slots[k]);
                    if (rows is not null) rows[merged++] = row;
                }
            }
            finally { g.EndEpochWrite(); }
        }
        finally { observer?.MergeFinished(_owner, rows.AsSpan(0, merged)); }
    }

    const int MergeSlotPrefetchDistance = 8, MergeRowPrefetchDistance = 4;

    /// <summary>Evicted rows are the least recently updated: cold slots, W rows and map lines. Profiled on the replay,
    /// merging waited on those loads one row after the other, with the write epoch odd (readers redo their blocks)
    /// all along. So, a few merges ahead: the slot (it holds the row), then the row's W lines and its map line.</summary>
    void PrefetchMerge(AdapterGeneration g, ReadOnlySpan<int> slots, int k)
    {
        if (!Sse.IsSupported) return;
        if (k == 0)
            for (int j = 0; j < Math.Min(slots.Length, MergeSlotPrefetchDistance); j++) Sse.Prefetch0(g.Record(slots[j]));
        if (k + MergeSlotPrefetchDistance < slots.Length) Sse.Prefetch0(g.Record(slots[k + MergeSlotPrefetchDistance]));
        int ahead = k == 0 ? 0 : k + MergeRowPrefetchDistance - 1;
        for (int j = ahead; j < Math.Min(slots.Length, k + MergeRowPrefetchDistance); j++)
        {
            SlotRecord* p = g.Record(slots[j]);
            byte* a = (byte*)g.APointer(slots[j]);
            Sse.Prefetch0(a);
            Sse.Prefetch0(a + g.Rank * sizeof(float) - 1);
            long row = p->Row;
            if (row < 0) continue;
            Sse.Prefetch0(g.MapPointer + g.Bucket(row));
            byte* w = _table.RowPointer(row);
            for (int offset = 0; offset < _table.RowStride; offset += 64) Sse.Prefetch0(w + offset);
            Sse.Prefetch0(w + _table.RowStride - 1);
        }
    }

    /// <summary>Folds one slot into W inside the slot's seqlock section, then frees it; returns its row. Readers that
    /// pinned this generation see old W + A (before the section) or new W with the slot no longer theirs (after): never both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    long MergeSlot(AdapterGeneration g, int slot)
    {
        SlotRecord* p = g.Record(slot);
        long row = p->Row;
        int dim = _table.Dim;
        float[] b = g.B;
        fixed (float* w = _rowScratch)
        fixed (float* pb = b)
        {
            StoredRows.Dequantise(_table, row, w);
            float* a = g.APointer(slot);
            for (int k = 0; k < g.Rank; k++) LoraMath.Axpy(a[k], pb + k * dim, w, dim);
        }
        // Computed and checked before the section opens, so a bad value can never leave the slot odd.
        if (!LoraMath.AllFinite(_rowScratch))
            throw new InvalidOperationException($"table '{_table.Name}': merging row {row} gives a non-finite value (internal error: adapter values are checked on write)");
        SlotSeqlock.BeginWrite(p);
        try
        {
            _table.WriteRow(row, _rowScratch);
            p->Row = -1;
            new Span<float>(g.APointer(slot), g.Rank).Clear();
        }
        finally { SlotSeqlock.EndWrite(p); }
        if (_owner.RowState is { } state) state[row] = p->Adagrad;   // a re-admitted row continues its state
        g.Remove(row);
        g.FreeSlots[g.FreeCount++] = slot;
        MergedRows++;
        return row;
    }

    /// <summary>Merges up to <paramref name="count"/> live rows of <paramref name="g"/> with the oldest update stamps,
    /// sparing the slots <paramref name="isProtected"/> names (the rows the step in progress touched). O(slots) selection, so callers evict in batches.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int EvictOldest(AdapterGeneration g, int count, Func<int, bool>? isProtected)
    {
        if (count <= 0 || g.Live == 0) return 0;
        var keys = new long[g.Live];
        int n = 0;
        for (int s = 0; s < g.SlotCapacity; s++)
        {
            SlotRecord* p = g.Record(s);
            if (p->Row < 0) continue;
            if (isProtected is not null && isProtected(s)) continue;
            keys[n++] = (p->Stamp << AdapterGeneration.SlotBits) | (long)s;
        }
        count = Math.Min(count, n);
        if (count == 0) return 0;
        var span = keys.AsSpan(0, n);
        if (count < n) SelectSmallest(span, count);
        var slots = new int[count];
        for (int k = 0; k < count; k++) slots[k] = (int)(span[k] & AdapterGeneration.SlotMask);
        MergeSlots(g, slots);
        return count;
    }

    /// <summary>Partially orders <paramref name="keys"/> so its first <paramref name="k"/> entries are the k smallest (quickselect).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SelectSmallest(Span<long> keys, int k)
    {
        int lo = 0, hi = keys.Length - 1;
        while (lo < hi)
        {
            long pivot = keys[lo + (hi - lo) / 2];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (keys[i] < pivot) i++;
                while (keys[j] > pivot) j--;
                if (i <= j) { (keys[i], keys[j]) = (keys[j], keys[i]); i++; j--; }
            }
            if (k - 1 <= j) hi = j;
            else if (k - 1 >= i) lo = i;
            else break;
        }
    }

}
