using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;

namespace LiveDlrm.Serving.Qos;

/// <summary>
/// Every stop-the-world pause of this process's garbage collector, from the runtime's own GC events (suspension
/// begins → threads restarted), as a histogram: a pause stops every request thread at once, so it reaches the
/// request-latency tail unchanged, and the runtime's cumulative pause time cannot tell one 40 ms pause from forty of
/// 1 ms. Listening to the GC keyword costs a few events per collection.
/// </summary>
internal sealed class GcPauseListener : EventListener
{
    const string RuntimeProvider = "Microsoft-Windows-DotNETRuntime";
    const EventKeywords GcKeyword = (EventKeywords)0x1;
    const int GcRestartEEEnd = 3, GcSuspendEEBegin = 9;

    readonly Histogram<double>? _pauses;
    long _suspendTicks;   // DateTime ticks of the pending suspension, 0 when none
    long _count, _totalTicks, _maxTicks;

    /// <summary>Every pause is also recorded into <paramref name="pauses"/> (seconds) when given.</summary>
    public GcPauseListener(Histogram<double>? pauses = null)
    {
        // Set before any event can arrive: OnEventSourceCreated runs from the base constructor.
        _pauses = pauses;
        foreach (var source in EventSource.GetSources()) Enable(source);
    }

    public long Count => Interlocked.Read(ref _count);
    public TimeSpan Total => TimeSpan.FromTicks(Interlocked.Read(ref _totalTicks));
    /// <summary>The longest pause since the last call (then reset): what a window of requests could have met.</summary>
    public TimeSpan TakeMax() => TimeSpan.FromTicks(Interlocked.Exchange(ref _maxTicks, 0));

    protected override void OnEventSourceCreated(EventSource eventSource) => Enable(eventSource);

    void Enable(EventSource source)
    {
        if (source.Name == RuntimeProvider) EnableEvents(source, EventLevel.Informational, GcKeyword);
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventId == GcSuspendEEBegin) Volatile.Write(ref _suspendTicks, e.TimeStamp.Ticks);
        else if (e.EventId == GcRestartEEEnd)
        {
            long begin = Interlocked.Exchange(ref _suspendTicks, 0);
            if (begin == 0) return;
            long ticks = e.TimeStamp.Ticks - begin;
            if (ticks < 0) return;
            Interlocked.Increment(ref _count);
            Interlocked.Add(ref _totalTicks, ticks);
            long max;
            while (ticks > (max = Interlocked.Read(ref _maxTicks)) && Interlocked.CompareExchange(ref _maxTicks, ticks, max) != max) { }
            _pauses?.Record(TimeSpan.FromTicks(ticks).TotalSeconds);
        }
    }
}
