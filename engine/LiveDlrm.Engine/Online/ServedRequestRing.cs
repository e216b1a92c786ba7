using System.Diagnostics.Metrics;

namespace LiveDlrm.Online;

/// <summary>
/// The features of recently served requests, by request id, waiting for their labels. Bounded: storing into a
/// full ring evicts the oldest request (it will never be trained on; counted in <see cref="Expired"/>), so memory
/// is fixed however many labels never arrive. Feedback for an id that is not (or no longer) here is counted in
/// <see cref="UnknownFeedback"/>. Thread-safe (one lock; a store or take is a dictionary operation). Its counters are
/// also instruments of its <see cref="Meter"/> (<see cref="MeterName"/>).
/// </summary>
internal sealed class ServedRequestRing : IDisposable
{
    public const string MeterName = "LiveDlrm.Online.ServedRequests";

    readonly ServedEvent?[] _slots;
    readonly Dictionary<long, int> _slotOf = new();
    readonly object _lock = new();
    readonly Counter<long> _stored, _joined, _expired, _unknown;
    long _next, _joinedCount;

    public int Capacity => _slots.Length;
    public long Stored { get; private set; }
    /// <summary>Requests taken by their feedback (joined with their label).</summary>
    public long Joined => Interlocked.Read(ref _joinedCount);
    /// <summary>Requests pushed out by newer ones before their label arrived.</summary>
    public long Expired { get; private set; }
    /// <summary>Feedback for ids never served, already labelled, or expired.</summary>
    public long UnknownFeedback { get; private set; }
    public int Count { get { lock (_lock) return _slotOf.Count; } }
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
        lock (_lock)
        {
            if (_slotOf.Remove(served.RequestId, out int previous)) _slots[previous] = null;
            int slot = (int)(_next++ % _slots.Length);
            var oldest = _slots[slot];
            if (oldest is not null)
            {
                _slotOf.Remove(oldest.RequestId);
                Expired++;
                _expired.Add(1);
            }
            _slots[slot] = served;
            _slotOf[served.RequestId] = slot;
            Stored++;
            _stored.Add(1);
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

    public void Dispose() => Meter.Dispose();
}
