using System.Diagnostics;

namespace LiveDlrm.Serving.Qos;

/// <summary>
/// How long work waits for a thread-pool thread right now. Kestrel parses requests and runs every handler on the
/// .NET thread pool, so a request's wait before its handler starts is the pool's queueing delay — time the handler's
/// own stopwatch never sees, and on a small, busy machine most of the client-side tail. Every
/// <see cref="Interval"/> a dedicated thread queues one stamped work item to the global queue (as Kestrel queues a
/// new HTTP/2 stream) and records how long it waited; <see cref="RecentWaitTicks"/> is the largest wait of the last
/// few probes, which <see cref="ServingHost"/> adds to a request's handler time to get the latency the QoS
/// controller defends. One work item per interval costs microseconds.
/// </summary>
internal sealed class PoolWaitProbe : IDisposable
{
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(2);
    const int Kept = 8;   // the last 8 probes (~16 ms): recent enough to track a burst, long enough to span a stall

    readonly long[] _waits = new long[Kept];
    readonly Thread _thread;
    readonly ManualResetEventSlim _stop = new(false);
    long _sent, _outstanding;

    public PoolWaitProbe()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "livedlrm-pool-probe" };
        _thread.Start();
    }

    /// <summary>The largest pool wait among the recent probes, in Stopwatch ticks; a probe still waiting counts with
    /// its wait so far (a stalled pool must not look idle).</summary>
    public long RecentWaitTicks
    {
        get
        {
            long max = 0;
            for (int i = 0; i < Kept; i++) max = Math.Max(max, Volatile.Read(ref _waits[i]));
            long outstanding = Volatile.Read(ref _outstanding);
            if (outstanding != 0) max = Math.Max(max, Stopwatch.GetTimestamp() - outstanding);
            return max;
        }
    }

    void Loop()
    {
        while (!_stop.Wait(Interval))
        {
            // One probe at a time: while the previous one waits, its age is the measurement.
            if (Volatile.Read(ref _outstanding) != 0) continue;
            long slot = _sent++ % Kept;
            long stamp = Stopwatch.GetTimestamp();
            Volatile.Write(ref _outstanding, stamp);
            ThreadPool.UnsafeQueueUserWorkItem(static s =>
            {
                var (probe, slot, stamp) = s;
                Volatile.Write(ref probe._waits[slot], Stopwatch.GetTimestamp() - stamp);
                Volatile.Write(ref probe._outstanding, 0);
            }, (this, slot, stamp), preferLocal: false);
        }
    }

    public void Dispose()
    {
        _stop.Set();
        _thread.Join();
        _stop.Dispose();
    }
}
