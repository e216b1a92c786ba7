namespace LiveDlrm.Data;

/// <summary>Shape of the batches a stream produces: the dense width and one entry per sparse feature (feature i
/// feeds embedding table i). Derived from a <see cref="StreamSchema"/> (<see cref="StreamSchema.Layout"/>) or
/// built directly.</summary>
public sealed class EventBatchLayout
{
    /// <summary>Dense features per event.</summary>
    public int DenseCount { get; }
    /// <summary>The sparse features in model order (feature i indexes embedding table i).</summary>
    public IReadOnlyList<SparseFeatureLayout> Sparse { get; }
    /// <summary>Number of sparse features.</summary>
    public int SparseCount => Sparse.Count;
    /// <summary>Whether batches carry the generator's true click probability per event (synthetic streams, or a
    /// TSV that has the column); the best achievable AUC over any window is the AUC of these.</summary>
    public bool HasTrueProbabilities { get; }

    /// <summary>A layout of <paramref name="denseCount"/> dense features and the sparse features
    /// <paramref name="sparse"/> (each table at most once).</summary>
    public EventBatchLayout(int denseCount, IReadOnlyList<SparseFeatureLayout> sparse, bool hasTrueProbabilities = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(denseCount);
        ArgumentNullException.ThrowIfNull(sparse);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var s in sparse)
            if (!names.Add(s.Table)) throw new ArgumentException($"sparse table '{s.Table}' appears twice in the layout", nameof(sparse));
        DenseCount = denseCount;
        Sparse = sparse.ToArray();
        HasTrueProbabilities = hasTrueProbabilities;
    }

    /// <summary>The position of the sparse feature indexing <paramref name="table"/>, or -1.</summary>
    public int SparseIndexOf(string table)
    {
        for (int i = 0; i < Sparse.Count; i++) if (Sparse[i].Table == table) return i;
        return -1;
    }
}

/// <summary>One sparse feature: the column it came from, the embedding table it indexes and that table's row
/// count (every index the stream emits is in [0, Rows)).</summary>
public sealed record SparseFeatureLayout(string Name, string Table, long Rows)
{
    /// <summary>The feature's name (for a hosted model: its table's name).</summary>
    public string Name { get; } = !string.IsNullOrEmpty(Name) ? Name : throw new ArgumentException("sparse feature name is empty");
    /// <summary>The embedding table the feature indexes.</summary>
    public string Table { get; } = !string.IsNullOrEmpty(Table) ? Table : throw new ArgumentException($"sparse feature '{Name}': table name is empty");
    /// <summary>The table's row count: every index is in [0, Rows).</summary>
    public long Rows { get; } = Rows > 0 ? Rows : throw new ArgumentOutOfRangeException(nameof(Rows), Rows, $"sparse feature '{Name}': rows must be > 0");
}

/// <summary>
/// A reusable batch of events, the unit every stream produces and the model and trainers consume.
/// <list type="bullet">
/// <item>Dense features: row-major <c>Count × DenseCount</c> floats, already transformed by the schema (Criteo
/// default: <c>log(1 + max(x, 0))</c>; a missing value is 0 after the transform).</item>
/// <item>Sparse features: one CSR per feature — <see cref="Indices"/> and <see cref="Offsets"/> (length
/// <c>Count + 1</c>, <c>offsets[0] == 0</c>, non-decreasing, <c>offsets[Count] == indices.Length</c>), exactly the
/// contract of <c>EmbeddingBag.Forward</c>. An empty field gives an empty bag.</item>
/// <item>Labels (0/1), timestamps (unix seconds), request ids, and the true click probability (synthetic only):
/// always stored, spans of length <see cref="Count"/>.</item>
/// </list>
/// Reuse: allocate once with a capacity, then <see cref="Clear"/> and append with <see cref="AddEvent"/> and
/// <see cref="AddIndex"/>. The per-feature index arrays grow geometrically only when a batch holds more indices
/// than any earlier one, so the steady state allocates nothing. Not thread-safe for writing; any number of readers
/// may read a batch nobody is writing.
/// </summary>
public sealed class EventBatch
{
    readonly float[] _dense;
    readonly float[] _labels;
    readonly long[] _timestamps;
    readonly long[] _requestIds;
    readonly float[] _trueProbabilities;
    readonly long[][] _indices;
    readonly long[][] _offsets;

    /// <summary>The batch's shape.</summary>
    public EventBatchLayout Layout { get; }
    /// <summary>Events the batch holds at most.</summary>
    public int Capacity { get; }
    /// <summary>Events in the batch now.</summary>
    public int Count { get; private set; }
    /// <summary>Dense features per event.</summary>
    public int DenseCount => Layout.DenseCount;
    /// <summary>Sparse features per event.</summary>
    public int SparseCount => Layout.SparseCount;
    /// <summary>Whether <see cref="Count"/> has reached <see cref="Capacity"/>.</summary>
    public bool IsFull => Count == Capacity;

    /// <summary>An empty batch of <paramref name="layout"/> for up to <paramref name="capacity"/> events, with room for
    /// <paramref name="indicesPerEventHint"/> indices per event and feature before its index arrays grow.</summary>
    public EventBatch(EventBatchLayout layout, int capacity, int indicesPerEventHint = 1)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(indicesPerEventHint, 1);
        Layout = layout;
        Capacity = capacity;
        _dense = new float[checked(capacity * layout.DenseCount)];
        _labels = new float[capacity];
        _timestamps = new long[capacity];
        _requestIds = new long[capacity];
        _trueProbabilities = new float[capacity];
        _indices = new long[layout.SparseCount][];
        _offsets = new long[layout.SparseCount][];
        for (int f = 0; f < layout.SparseCount; f++)
        {
            _indices[f] = new long[checked(capacity * indicesPerEventHint)];
            _offsets[f] = new long[capacity + 1];
        }
    }

    /// <summary>Row-major <c>Count × DenseCount</c> transformed dense features.</summary>
    public ReadOnlySpan<float> Dense => _dense.AsSpan(0, Count * DenseCount);
    /// <summary>The dense features of event <paramref name="row"/>.</summary>
    public ReadOnlySpan<float> DenseRow(int row) => _dense.AsSpan(CheckRow(row) * DenseCount, DenseCount);
    /// <summary>Each event's label (0 or 1; unused when scoring).</summary>
    public ReadOnlySpan<float> Labels => _labels.AsSpan(0, Count);
    /// <summary>Each event's timestamp (unix seconds; unused when scoring).</summary>
    public ReadOnlySpan<long> Timestamps => _timestamps.AsSpan(0, Count);
    /// <summary>Each event's request id: the key a later label is joined by.</summary>
    public ReadOnlySpan<long> RequestIds => _requestIds.AsSpan(0, Count);
    /// <summary>The generator's click probability per event; empty unless <see cref="EventBatchLayout.HasTrueProbabilities"/>.</summary>
    public ReadOnlySpan<float> TrueProbabilities => Layout.HasTrueProbabilities ? _trueProbabilities.AsSpan(0, Count) : default;

    /// <summary>CSR indices of sparse feature <paramref name="feature"/> (all bags of the batch, concatenated).</summary>
    public ReadOnlySpan<long> Indices(int feature) => _indices[feature].AsSpan(0, (int)_offsets[feature][Count]);
    /// <summary>CSR offsets of sparse feature <paramref name="feature"/>: length <c>Count + 1</c>, starting at 0.</summary>
    public ReadOnlySpan<long> Offsets(int feature) => _offsets[feature].AsSpan(0, Count + 1);
    /// <summary><see cref="Indices"/> and <see cref="Offsets"/> as memory, for lookups handed over for several tables at once.</summary>
    internal ReadOnlyMemory<long> IndicesMemory(int feature) => _indices[feature].AsMemory(0, (int)_offsets[feature][Count]);
    internal ReadOnlyMemory<long> OffsetsMemory(int feature) => _offsets[feature].AsMemory(0, Count + 1);
    /// <summary>Indices of one event's bag for one feature.</summary>
    public ReadOnlySpan<long> Bag(int feature, int row)
    {
        CheckRow(row);
        long[] o = _offsets[feature];
        return _indices[feature].AsSpan((int)o[row], (int)(o[row + 1] - o[row]));
    }
    /// <summary>Total indices of the batch over all sparse features.</summary>
    public long TotalIndices
    {
        get { long n = 0; for (int f = 0; f < SparseCount; f++) n += _offsets[f][Count]; return n; }
    }

    /// <summary>Empties the batch for reuse (keeps its arrays).</summary>
    public void Clear() => Count = 0;

    /// <summary>Starts a new event (row) with the given scalar fields; its dense row is zeroed and its bags are
    /// empty until filled through <see cref="DenseRowForWrite"/> and <see cref="AddIndex"/>. Returns the row.</summary>
    public int AddEvent(float label, long timestamp, long requestId = 0, float trueProbability = 0f)
    {
        if (Count == Capacity) throw new InvalidOperationException($"event batch is full (capacity {Capacity})");
        int row = Count++;
        _labels[row] = label;
        _timestamps[row] = timestamp;
        _requestIds[row] = requestId;
        _trueProbabilities[row] = trueProbability;
        _dense.AsSpan(row * DenseCount, DenseCount).Clear();
        for (int f = 0; f < _offsets.Length; f++) _offsets[f][row + 1] = _offsets[f][row];
        return row;
    }

    /// <summary>Writable dense row of the event being built (or any earlier one).</summary>
    public Span<float> DenseRowForWrite(int row) => _dense.AsSpan(CheckRow(row) * DenseCount, DenseCount);

    /// <summary>Appends one index to the bag of the LAST event for sparse feature <paramref name="feature"/>.</summary>
    public void AddIndex(int feature, long index)
    {
        if (Count == 0) throw new InvalidOperationException("AddIndex before AddEvent");
        long[] offsets = _offsets[feature];
        long end = offsets[Count];
        if (end == _indices[feature].Length) EnsureIndexCapacity(feature, Math.Max(16, end + 1));
        _indices[feature][end] = index;
        offsets[Count] = end + 1;
    }

    /// <summary>Drops the last event (e.g. a line that turned out bad after being partly appended).</summary>
    public void RemoveLast()
    {
        if (Count == 0) throw new InvalidOperationException("batch is empty");
        Count--;
    }

    /// <summary>Sets event <paramref name="row"/>'s label.</summary>
    public void SetLabel(int row, float label) => _labels[CheckRow(row)] = label;
    /// <summary>Sets event <paramref name="row"/>'s timestamp.</summary>
    public void SetTimestamp(int row, long timestamp) => _timestamps[CheckRow(row)] = timestamp;
    /// <summary>Sets event <paramref name="row"/>'s request id.</summary>
    public void SetRequestId(int row, long requestId) => _requestIds[CheckRow(row)] = requestId;

    /// <summary>Appends one event of <paramref name="source"/> (same layout) to this batch.</summary>
    public int CopyEventFrom(EventBatch source, int row)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!ReferenceEquals(source.Layout, Layout) && !SameShape(source.Layout, Layout))
            throw new ArgumentException("source batch has a different layout", nameof(source));
        int dst = AddEvent(source._labels[source.CheckRow(row)], source._timestamps[row], source._requestIds[row], source._trueProbabilities[row]);
        source.DenseRow(row).CopyTo(DenseRowForWrite(dst));
        for (int f = 0; f < SparseCount; f++)
            foreach (long i in source.Bag(f, row)) AddIndex(f, i);
        return dst;
    }

    /// <summary>Appends events [<paramref name="start"/>, start + count) of <paramref name="source"/> (same
    /// shape) with bulk copies.</summary>
    public void AppendRange(EventBatch source, int start, int count)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!ReferenceEquals(source.Layout, Layout) && !SameShape(source.Layout, Layout))
            throw new ArgumentException("source batch has a different layout", nameof(source));
        if (start < 0 || count < 0 || start + count > source.Count)
            throw new ArgumentOutOfRangeException(nameof(count), $"range [{start}, {start + count}) outside the source's {source.Count} events");
        if (count > Capacity - Count) throw new InvalidOperationException($"{count} events do not fit (batch holds {Count} of {Capacity})");
        int dst = Count;
        source._labels.AsSpan(start, count).CopyTo(_labels.AsSpan(dst));
        source._timestamps.AsSpan(start, count).CopyTo(_timestamps.AsSpan(dst));
        source._requestIds.AsSpan(start, count).CopyTo(_requestIds.AsSpan(dst));
        source._trueProbabilities.AsSpan(start, count).CopyTo(_trueProbabilities.AsSpan(dst));
        source._dense.AsSpan(start * DenseCount, count * DenseCount).CopyTo(_dense.AsSpan(dst * DenseCount));
        for (int f = 0; f < SparseCount; f++)
        {
            long[] so = source._offsets[f];
            long from = so[start], n = so[start + count] - from;
            long[] o = _offsets[f];
            long baseIndex = o[dst];
            EnsureIndexCapacity(f, baseIndex + n);
            Array.Copy(source._indices[f], from, _indices[f], baseIndex, n);
            long shift = baseIndex - from;
            for (int i = 1; i <= count; i++) o[dst + i] = so[start + i] + shift;
        }
        Count = dst + count;
    }

    // Raw access for the binary cache, which fills whole ranges at once.
    internal float[] LabelArray => _labels;
    internal long[] TimestampArray => _timestamps;
    internal long[] RequestIdArray => _requestIds;
    internal float[] TrueProbabilityArray => _trueProbabilities;
    internal float[] DenseArray => _dense;
    internal long[] OffsetArray(int feature) => _offsets[feature];
    internal long[] IndexArray(int feature) => _indices[feature];
    internal void SetCountUnchecked(int count) => Count = count;

    internal void EnsureIndexCapacity(int feature, long needed)
    {
        if (needed <= _indices[feature].Length) return;
        if (needed > Array.MaxLength) throw new InvalidOperationException($"sparse feature {feature}: {needed} indices exceed one array");
        long grown = Math.Max(needed, Math.Min(Array.MaxLength, (long)_indices[feature].Length * 2));
        Array.Resize(ref _indices[feature], (int)grown);
    }

    static bool SameShape(EventBatchLayout a, EventBatchLayout b) =>
        a.DenseCount == b.DenseCount && a.SparseCount == b.SparseCount && a.HasTrueProbabilities == b.HasTrueProbabilities
        && a.Sparse.Zip(b.Sparse).All(p => p.First.Table == p.Second.Table && p.First.Rows == p.Second.Rows);

    int CheckRow(int row)
    {
        if ((uint)row >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(row), row, $"row outside the batch's {Count} events");
        return row;
    }
}
