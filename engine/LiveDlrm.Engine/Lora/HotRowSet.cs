namespace LiveDlrm.Lora;

/// <summary>The rows an adapter serves from W itself (trainer thread only): per row its row-wise Adagrad accumulator
/// and the adapter clock of its last update. A hot row has no slot, so the lookup's filter and map never see it; its
/// steps are written into W[row] by <see cref="TableAdapter.ApplyGradients"/> inside the write epoch.
/// <para>Fixed capacity, taken from the adapter's budget at <see cref="BytesPerRow"/> each (a dictionary entry of a
/// long key and this 24-byte value is 40 bytes, 44 with its bucket, rounded up to cover the prime-sized table's slack): the
/// dictionary is created at that capacity and never grows past it — a full set drops its least recently updated
/// rows first (nothing to merge: their steps are already in W).</para></summary>
internal sealed class HotRowSet
{
    /// <summary>Budget bytes counted for one hot row.</summary>
    public const int BytesPerRow = 48;

    internal struct Entry
    {
        public long Stamp;
        public long TouchClock;
        public float Adagrad;
        /// <summary>Index into the step's hot scratch, valid only when <see cref="TouchClock"/> is the step's clock.</summary>
        public int Touch;
    }

    readonly Dictionary<long, Entry> _rows;

    public HotRowSet(int capacity)
    {
        Capacity = capacity;
        _rows = new Dictionary<long, Entry>(capacity);
    }

    public int Capacity { get; }
    public int Count => _rows.Count;
    /// <summary>Budget bytes the set is charged: its whole capacity, whether used or not.</summary>
    public long Bytes => (long)Capacity * BytesPerRow;

    public ref Entry Find(long row) => ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_rows, row);

    /// <summary>Adds <paramref name="row"/> (not in the set) with its accumulator; a full set first drops its
    /// <paramref name="evictCount"/> least recently updated rows, handing each dropped row's accumulator to
    /// <paramref name="dropped"/>. False when the set has no capacity at all.</summary>
    public bool Add(long row, float adagrad, long stamp, int evictCount, Action<long, float> dropped)
    {
        if (Capacity == 0) return false;
        if (_rows.Count >= Capacity) DropOldest(Math.Max(1, evictCount), dropped);
        _rows.Add(row, new Entry { Adagrad = adagrad, Stamp = stamp, Touch = -1, TouchClock = -1 });
        return true;
    }

    void DropOldest(int count, Action<long, float> dropped)
    {
        var keys = new (long Stamp, long Row)[_rows.Count];
        int n = 0;
        foreach (var (row, e) in _rows) keys[n++] = (e.Stamp, row);
        Array.Sort(keys);
        for (int k = 0; k < Math.Min(count, n); k++)
        {
            long row = keys[k].Row;
            dropped(row, _rows[row].Adagrad);
            _rows.Remove(row);
        }
    }

    /// <summary>Takes <paramref name="row"/> out of the set (it is getting a slot again); its accumulator, or null if it was not hot.</summary>
    public float? Remove(long row) => _rows.Remove(row, out var e) ? e.Adagrad : null;

    public IEnumerable<long> Rows => _rows.Keys;
}
