using System.Diagnostics;
using System.Threading.Channels;

namespace LiveDlrm.Online;

/// <summary>
/// The labelled events waiting for the online trainer: a bounded channel that drops the oldest event when full
/// (each drop counted through <see cref="TrainerStats.Drop"/>), so a trainer that falls behind costs memory bounded
/// by the capacity and never blocks the serving threads that enqueue. Many writers, one reader (the trainer thread).
/// </summary>
sealed class TrainerQueue
{
    readonly Channel<ServedEvent> _channel;
    readonly TrainerStats _stats;
    readonly ManualResetEventSlim _arrived = new(false);
    readonly int _wakeAt;
    readonly bool _wakeOnFirst;
    long _newestTime = long.MinValue;
    long _waitingSince;   // when the oldest waiting event arrived (approximately: when the queue last became non-empty)

    /// <param name="wakeAt">Queue length at which a writer wakes the reader (the trainer's batch size): below it the
    /// reader has nothing to do, and waking it for every label cost a futex call on the serving thread and a
    /// context switch on the trainer's per event.</param>
    /// <param name="wakeOnFirst">Also wake the reader when the queue becomes non-empty (it then times a partial
    /// batch's wait, <see cref="OnlineTrainerOptions.MaxBatchWait"/>).</param>
    public TrainerQueue(int capacity, TrainerStats stats, int wakeAt = 1, bool wakeOnFirst = true)
    {
        _stats = stats;
        _wakeAt = Math.Max(1, wakeAt);
        _wakeOnFirst = wakeOnFirst;
        _channel = Channel.CreateBounded<ServedEvent>(
            new BoundedChannelOptions(capacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true, SingleWriter = false },
            _ => stats.Drop());
    }

    public int Count => _channel.Reader.Count;
    /// <summary>Timestamp of the newest event ever queued (long.MinValue before the first).</summary>
    public long NewestTime => Interlocked.Read(ref _newestTime);
    public TimeSpan OldestWait => Count == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(Interlocked.Read(ref _waitingSince));
    public bool TryPeek(out ServedEvent served) => _channel.Reader.TryPeek(out served!);

    public void Write(ServedEvent served)
    {
        bool first = Count == 0;
        if (first) Interlocked.Exchange(ref _waitingSince, Stopwatch.GetTimestamp());
        _channel.Writer.TryWrite(served);   // never false: a full bounded DropOldest channel drops instead
        _stats.Enqueue();
        long seen;
        while (served.Timestamp > (seen = Interlocked.Read(ref _newestTime)) &&
               Interlocked.CompareExchange(ref _newestTime, served.Timestamp, seen) != seen) { }
        if ((first && _wakeOnFirst) || Count >= _wakeAt) _arrived.Set();
    }

    /// <summary>Moves up to <paramref name="max"/> events into <paramref name="into"/> (cleared first).</summary>
    public void Take(List<ServedEvent> into, int max)
    {
        into.Clear();
        while (into.Count < max && _channel.Reader.TryRead(out var e)) into.Add(e);
        if (Count > 0) Interlocked.Exchange(ref _waitingSince, Stopwatch.GetTimestamp());
    }

    /// <summary>Waits until an event arrives, <see cref="Wake"/> is called, or <paramref name="timeoutMs"/> passes.
    /// Reader side only; checks made after <see cref="ResetWake"/> never miss an arrival.</summary>
    public void WaitForArrival(int timeoutMs) => _arrived.Wait(timeoutMs);
    public void ResetWake() => _arrived.Reset();
    public void Wake() => _arrived.Set();
}
