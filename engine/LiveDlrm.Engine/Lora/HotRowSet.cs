namespace LiveDlrm.Lora;

/// <summary>The rows an adapter serves from W itself (trainer thread only): per row its A vector (kept here, where the
/// lookup's filter and map never see it), its row-wise Adagrad accumulator and the adapter clock of its last update.
/// <see cref="TableAdapter.ApplyGradients"/> keeps <c>W[row] = W_base[row] + A[row]·B</c> for every row in the set:
/// a step writes <c>ΔW = A_new·B_new − A_old·B_old</c> into each hot row inside the write epoch, so a hot row learns as
/// a slot row does (B gets its gradient, its update moves with B) while lookups read it as a plain W row.
/// <para>Fixed size, taken from the adapter's budget: <see cref="BookkeepingBytesPerRow"/> for the dictionary entry
/// (a long key and a 32-byte value is 48 bytes, 52 with its bucket, rounded up to cover the prime-sized table's slack)
/// plus the A vector at the initial rank. The dictionary and the A store are allocated once at that capacity and never
/// grow; at a higher rank the same A store holds fewer rows. A full set drops its least recently updated rows first
/// (nothing to merge: W already holds their A·B, which stays there as a merge would leave it).</para></summary>
internal sealed class HotRowSet
{
    /// <summary>Budget bytes counted for one hot row besides its A vector.</summary>
    public const int BookkeepingBytesPerRow = 56;

    internal struct Entry
    {
        public long Stamp;
        public long TouchClock;
        public float Adagrad;
        /// <summary>Index into the step's hot scratch, valid only when <see cref="TouchClock"/> is the step's clock.</summary>
        public int Touch;
        /// <summary>Where the row's A vector is in the A store (× <see cref="Rank"/> floats).</summary>
        public int AIndex;
    }

    readonly Dictionary<long, Entry> _rows;
    readonly int _maxCapacity;
    readonly float[] _a;
    readonly long[] _rowOf;      // per A index: the row, or -1
    readonly int[] _free;
    int _freeCount;

    /// <summary>A set of at most <paramref name="capacity"/> rows with A vectors of <paramref name="rank"/> floats.</summary>
    public HotRowSet(int capacity, int rank)
    {
        _maxCapacity = capacity;
        _rows = new Dictionary<long, Entry>(capacity);
        _a = new float[(long)capacity * rank];
        _rowOf = new long[capacity];
        _free = new int[capacity];
        Reshape(rank, (_, _) => { });
    }

    /// <summary>Rows that fit at the current rank.</summary>
    public int Capacity { get; private set; }
    public int Count => _rows.Count;
    /// <summary>Floats per A vector (the adapter's rank).</summary>
    public int Rank { get; private set; }
    /// <summary>Highest A index in use + 1 (A indices are in [0, <see cref="Capacity"/>)).</summary>
    public int IndexLimit => Capacity;
    /// <summary>Budget bytes the set is charged: its whole allocation, whether used or not.</summary>
    public long Bytes => (long)_maxCapacity * BookkeepingBytesPerRow + (long)_a.Length * sizeof(float);

    /// <summary>Budget bytes of a set of <paramref name="capacity"/> rows at <paramref name="rank"/>.</summary>
    public static long BytesFor(int capacity, int rank) => (long)capacity * (BookkeepingBytesPerRow + rank * sizeof(float));

    public ref Entry Find(long row) => ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_rows, row);

    /// <summary>The A vector at <paramref name="index"/>.</summary>
    public Span<float> A(int index) => _a.AsSpan(index * Rank, Rank);

    /// <summary>The row whose A vector is at <paramref name="index"/>, or -1.</summary>
    public long RowAt(int index) => _rowOf[index];

    /// <summary>Adds <paramref name="row"/> (not in the set) with its accumulator and A vector; a full set first drops
    /// its <paramref name="evictCount"/> least recently updated rows, handing each dropped row's accumulator to
    /// <paramref name="dropped"/>. False when the set has no capacity at all.</summary>
    public bool Add(long row, float adagrad, long stamp, ReadOnlySpan<float> a, int evictCount, Action<long, float> dropped)
    {
        if (Capacity == 0) return false;
        if (_rows.Count >= Capacity) DropOldest(Math.Max(1, evictCount), dropped);
        int index = _free[--_freeCount];
        a.CopyTo(A(index));
        _rowOf[index] = row;
        _rows.Add(row, new Entry { Adagrad = adagrad, Stamp = stamp, Touch = -1, TouchClock = -1, AIndex = index });
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
            Remove(row);
        }
    }

    /// <summary>Takes <paramref name="row"/> out of the set (its A·B stays in W, as after a merge); its accumulator,
    /// or null if it was not hot.</summary>
    public float? Remove(long row)
    {
        if (!_rows.Remove(row, out var e)) return null;
        _rowOf[e.AIndex] = -1;
        _free[_freeCount++] = e.AIndex;
        return e.Adagrad;
    }

    /// <summary>After a new B of <paramref name="rank"/> rows that no A vector here was trained for (a rank change, a
    /// wholesale B, a full merge): every A becomes zero — W keeps A·B as it was, exactly what a merge leaves — and the
    /// store is re-cut for the new rank, dropping the least recently updated rows that no longer fit.</summary>
    public void Reshape(int rank, Action<long, float> dropped)
    {
        Rank = rank;
        Capacity = (int)Math.Min(_maxCapacity, _a.Length / Math.Max(1, rank));
        if (_rows.Count > Capacity) DropOldest(_rows.Count - Capacity, dropped);
        Array.Clear(_a);
        Array.Fill(_rowOf, -1L);
        _freeCount = 0;
        var rows = _rows.Keys.ToArray();
        int next = 0;
        foreach (long row in rows)
        {
            ref var e = ref Find(row);
            e.AIndex = next;
            _rowOf[next++] = row;
        }
        for (int i = _maxCapacity - 1; i >= next; i--)
            if (i < Capacity) _free[_freeCount++] = i;
    }

    public IEnumerable<long> Rows => _rows.Keys;
}
