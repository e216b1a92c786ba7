using System.Diagnostics.Metrics;
using LiveDlrm.Data;

namespace LiveDlrm.Online;

/// <summary>
/// The features of recently served requests, by request id, waiting for their labels. Bounded: storing into a
/// full ring evicts the oldest request (it will never be trained on; counted in <see cref="Expired"/>), so memory
/// is fixed however many labels never arrive. Feedback for an id that is not (or no longer) here is counted in
/// <see cref="UnknownFeedback"/>. Thread-safe (one lock, taken once per served batch and once per label). Its
/// counters are also instruments of its <see cref="Meter"/> (<see cref="MeterName"/>).
/// <para>No allocation per request once warm: the events it makes (<see cref="Store(EventBatch, ReadOnlySpan{float}, int, ReadOnlySpan{float}, int, Func{long, bool}?)"/>)
/// come back to a free list when they expire, are replaced or forgotten, or are handed back after training
/// (<see cref="Recycle"/>), and are refilled in place. Building a new object graph per request (a dozen small
/// arrays) and collecting it once trained cost the serving thread about 2.4 µs an event, more than the adapted
/// lookups themselves. The free list is bounded (<see cref="MaxFree"/>), so a burst of waiting requests is not
/// kept alive after it has been served and trained.</para>
/// </summary>
internal sealed class ServedRequestRing : IDisposable
{
    public const string MeterName = "LiveDlrm.Online.ServedRequests";
    /// <summary>At most this many recycled events wait on the free list (beyond it they are left to the GC).</summary>
    public const int MaxFree = 8192;

    readonly ServedEvent?[] _slots;
    readonly Dictionary<long, int> _slotOf = new();
    readonly Stack<ServedEvent> _free = new();
    readonly object _lock = new();
    readonly Counter<long> _stored, _joined, _expired, _unknown;
    long _next, _joinedCount, _made;

    public int Capacity => _slots.Length;
    public long Stored { get; private set; }
    /// <summary>Requests taken by their feedback (joined with their label).</summary>
    public long Joined => Interlocked.Read(ref _joinedCount);
    /// <summary>Requests pushed out by newer ones before their label arrived.</summary>
    public long Expired { get; private set; }
    /// <summary>Feedback for ids never served, already labelled, or expired.</summary>
    public long UnknownFeedback { get; private set; }
    public int Count { get { lock (_lock) return _slotOf.Count; } }
    /// <summary>Events this ring has allocated (the rest of <see cref="Stored"/> reused recycled ones).</summary>
    public long EventsAllocated => Interlocked.Read(ref _made);
    /// <summary>Recycled events waiting to be refilled.</summary>
    public int FreeCount { get { lock (_lock) return _free.Count; } }
    public Meter Meter { get; }

    public ServedRequestRing(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _slots = new ServedEvent?[capacity];
        Meter = new Meter(MeterName);
        _stored = Meter.CreateCounter<long>("livedlrm.requests.stored", "{request}", "Served requests remembered for their label");
        _joined = Meter.CreateCounter<long>("livedlrm.requests.joined", "{request}", "Feedback joined with its served request");
        _expired = Meter.CreateCounter<long>("livedlrm.requests.expired", "{request}", "Served requests pushed out before their label arrived");
        _unknown = Meter.CreateCounter<long>("livedlrm.requests.unknown_feedback", "{request}", "Feedback for a request never served, already joined, or expired");
        Meter.CreateObservableGauge("livedlrm.requests.waiting", () => Count, "{request}", "Served requests waiting for their label");
    }

    /// <summary>Remembers <paramref name="served"/>; a second store of the same request id replaces the first.</summary>
    public void Store(ServedEvent served)
    {
        ArgumentNullException.ThrowIfNull(served);
        lock (_lock) StoreLocked(served);
        _stored.Add(1);
    }

    /// <summary>Remembers every event of <paramref name="batch"/> whose request id <paramref name="keep"/> accepts
    /// (all when null), in recycled events where there are some: <paramref name="pooled"/> is the batch's
    /// table-major <c>[T, B, d]</c> pooled output (empty = not kept), <paramref name="activations"/> the batch's
    /// event-major activation records of <paramref name="activationLength"/> floats each (empty = not kept).</summary>
    public void Store(EventBatch batch, ReadOnlySpan<float> pooled, int dim, ReadOnlySpan<float> activations, int activationLength,
                      Func<long, bool>? keep = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int b = batch.Count, tables = batch.SparseCount, dense = batch.DenseCount;
        int pooledFloats = pooled.IsEmpty ? 0 : tables * dim, activationFloats = activations.IsEmpty ? 0 : activationLength;
        if (!activations.IsEmpty && activations.Length < b * activationLength)
            throw new ArgumentException($"{activations.Length} activation floats for {b} events of {activationLength}", nameof(activations));
        var ids = batch.RequestIds;
        int n = 0;
        for (int i = 0; i < b; i++) if (keep is null || keep(ids[i])) n++;
        if (n == 0) return;
        // Taken from the free list under one lock, filled outside it (serving threads copy in parallel), stored
        // under a second.
        var events = System.Buffers.ArrayPool<ServedEvent>.Shared.Rent(n);
        try
        {
            int reused = 0;
            lock (_lock)
                while (reused < n && _free.TryPeek(out var e) && e.Fits(dense, tables, pooledFloats, activationFloats))
                {
                    _free.Pop().IsFree = false;
                    events[reused++] = e;
                }
            for (int k = reused; k < n; k++) events[k] = ServedEvent.Recyclable(this, dense, tables, pooledFloats, activationFloats);
            if (n > reused) Interlocked.Add(ref _made, n - reused);
            for (int i = 0, k = 0; i < b; i++)
                if (keep is null || keep(ids[i]))
                    events[k++].Refill(batch, i, pooled, dim, activationFloats == 0 ? default : activations.Slice(i * activationLength, activationLength));
            lock (_lock)
                for (int k = 0; k < n; k++) StoreLocked(events[k]);
            _stored.Add(n);
        }
        finally { System.Buffers.ArrayPool<ServedEvent>.Shared.Return(events, clearArray: true); }
    }

    void StoreLocked(ServedEvent served)
    {
        if (_slotOf.Remove(served.RequestId, out int previous))
        {
            FreeLocked(_slots[previous]!);
            _slots[previous] = null;
        }
        int slot = (int)(_next++ % _slots.Length);
        var oldest = _slots[slot];
        if (oldest is not null)
        {
            _slotOf.Remove(oldest.RequestId);
            FreeLocked(oldest);
            Expired++;
            _expired.Add(1);
        }
        _slots[slot] = served;
        _slotOf[served.RequestId] = slot;
        Stored++;
    }

    /// <summary>Removes and returns the request <paramref name="requestId"/>; false (counted) when it is unknown.
    /// The caller owns the event: hand it back with <see cref="Recycle"/> once done with it, or keep it.</summary>
    public bool TryTake(long requestId, out ServedEvent served)
    {
        lock (_lock)
        {
            if (_slotOf.Remove(requestId, out int slot))
            {
                served = _slots[slot]!;
                _slots[slot] = null;
                Interlocked.Increment(ref _joinedCount);
                _joined.Add(1);
                return true;
            }
            UnknownFeedback++;
            _unknown.Add(1);
            served = null!;
            return false;
        }
    }

    /// <summary>Removes request <paramref name="requestId"/> without a label (its label window passed) and recycles
    /// it; false (counted as unknown feedback, as <see cref="TryTake"/> counts it) when it is not here.</summary>
    public bool Forget(long requestId)
    {
        if (!TryTake(requestId, out var served)) return false;
        Recycle(served);
        return true;
    }

    /// <summary>Hands events back for reuse: the caller must hold no reference it will read again. Events this ring
    /// did not make, and events already handed back, are ignored.</summary>
    public void Recycle(ServedEvent served)
    {
        if (served.Owner != this) return;
        lock (_lock) FreeLocked(served);
    }

    /// <inheritdoc cref="Recycle(ServedEvent)"/>
    public void Recycle(IReadOnlyList<ServedEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        lock (_lock)
            for (int i = 0; i < events.Count; i++)
                if (events[i].Owner == this) FreeLocked(events[i]);
    }

    void FreeLocked(ServedEvent e)
    {
        if (e.Owner != this || e.IsFree || _free.Count >= MaxFree) return;
        e.IsFree = true;
        _free.Push(e);
    }

    public void Dispose() => Meter.Dispose();
}
