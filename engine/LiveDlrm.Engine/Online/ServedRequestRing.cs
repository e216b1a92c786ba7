namespace LiveDlrm.Online;

/// <summary>
/// The features of recently served requests, by request id, waiting for their labels. Bounded: storing into a
/// full ring evicts the oldest request (it will never be trained on; counted in <see cref="Expired"/>), so memory
/// is fixed however many labels never arrive. Feedback for an id that is not (or no longer) here is counted in
/// <see cref="UnknownFeedback"/>. Thread-safe (one lock; a store or take is a dictionary operation).
/// </summary>
public sealed class ServedRequestRing
{
    readonly ServedEvent?[] _slots;
    readonly Dictionary<long, int> _slotOf = new();
    readonly object _lock = new();
    long _next;

    public int Capacity => _slots.Length;
    public long Stored { get; private set; }
    /// <summary>Requests pushed out by newer ones before their label arrived.</summary>
    public long Expired { get; private set; }
    /// <summary>Feedback for ids never served, already labelled, or expired.</summary>
    public long UnknownFeedback { get; private set; }
    public int Count { get { lock (_lock) return _slotOf.Count; } }

    public ServedRequestRing(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _slots = new ServedEvent?[capacity];
    }

    /// <summary>Remembers <paramref name="served"/>; a second store of the same request id replaces the first.</summary>
    public void Store(ServedEvent served)
    {
        ArgumentNullException.ThrowIfNull(served);
        lock (_lock)
        {
            if (_slotOf.Remove(served.RequestId, out int previous)) _slots[previous] = null;
            int slot = (int)(_next++ % _slots.Length);
            var oldest = _slots[slot];
            if (oldest is not null)
            {
                _slotOf.Remove(oldest.RequestId);
                Expired++;
            }
            _slots[slot] = served;
            _slotOf[served.RequestId] = slot;
            Stored++;
        }
    }

    /// <summary>Removes and returns the request <paramref name="requestId"/>; false (counted) when it is unknown.</summary>
    public bool TryTake(long requestId, out ServedEvent served)
    {
        lock (_lock)
        {
            if (_slotOf.Remove(requestId, out int slot))
            {
                served = _slots[slot]!;
                _slots[slot] = null;
                return true;
            }
            UnknownFeedback++;
            served = null!;
            return false;
        }
    }
}
