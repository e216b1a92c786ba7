using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace LiveDlrm.Online;

/// <summary>
/// The online trainer's counters. Each is a field the trainer's properties read and an instrument of the
/// trainer's <see cref="Meter"/> (<see cref="MeterName"/>), which is what a metrics endpoint exports.
/// Written by the trainer thread and by the enqueuing threads; read from anywhere.
/// </summary>
sealed class TrainerStats : IDisposable
{
    public const string MeterName = "LiveDlrm.Online.Trainer";

    readonly Counter<long> _samples, _steps, _discarded, _drops, _enqueued;
    long samples, steps, discarded, drops, enqueued, busyTicks, startTicks;
    long _cpuMicroseconds;
    long _newestTrainedTime = long.MinValue;

    public Meter Meter { get; }
    public long Samples => Interlocked.Read(ref samples);
    public long Steps => Interlocked.Read(ref steps);
    public long Discarded => Interlocked.Read(ref discarded);
    public long Drops => Interlocked.Read(ref drops);
    public long Enqueued => Interlocked.Read(ref enqueued);
    public double CpuSeconds => Interlocked.Read(ref _cpuMicroseconds) / 1e6;
    public long BusyTicks => Interlocked.Read(ref busyTicks);
    public long StartTicks => Interlocked.Read(ref startTicks);
    public long NewestTrainedTime => Interlocked.Read(ref _newestTrainedTime);

    /// <param name="lagSeconds">The trainer's event-time lag, observed when a listener collects.</param>
    /// <param name="queueLength">Events waiting, observed likewise.</param>
    public TrainerStats(Func<long> lagSeconds, Func<int> queueLength)
    {
        Meter = new Meter(MeterName);
        _samples = Meter.CreateCounter<long>("livedlrm.trainer.samples", "{event}", "Labelled events the trainer took into steps");
        _steps = Meter.CreateCounter<long>("livedlrm.trainer.steps", "{step}", "Optimizer steps applied");
        _discarded = Meter.CreateCounter<long>("livedlrm.trainer.discarded_steps", "{step}", "Steps discarded for a non-finite loss or gradient");
        _drops = Meter.CreateCounter<long>("livedlrm.trainer.drops", "{event}", "Labelled events dropped unseen because the queue was full");
        _enqueued = Meter.CreateCounter<long>("livedlrm.trainer.enqueued", "{event}", "Labelled events queued for training");
        Meter.CreateObservableGauge("livedlrm.trainer.lag", lagSeconds, "s", "Event-time lag of the newest trained event behind the newest queued one");
        Meter.CreateObservableGauge("livedlrm.trainer.queue_length", queueLength, "{event}", "Labelled events waiting for the trainer");
        Meter.CreateObservableCounter("livedlrm.trainer.cpu_time", () => CpuSeconds, "s", "CPU time of the trainer thread in steps");
    }

    public void Started() => Interlocked.CompareExchange(ref startTicks, Stopwatch.GetTimestamp(), 0);

    public void Enqueue() { Interlocked.Increment(ref enqueued); _enqueued.Add(1); }

    /// <summary>The bounded queue's drop callback: one event was dropped, oldest first.</summary>
    public void Drop() { Interlocked.Increment(ref drops); _drops.Add(1); }

    public long Discard() { _discarded.Add(1); return Interlocked.Increment(ref discarded); }

    /// <summary>One step over <paramref name="events"/> events finished (applied or discarded).</summary>
    public void Step(int events, bool applied, long newestTime, double cpuSeconds, long busy)
    {
        Interlocked.Add(ref samples, events);
        _samples.Add(events);
        if (applied) { Interlocked.Increment(ref steps); _steps.Add(1); }
        Interlocked.Add(ref _cpuMicroseconds, (long)Math.Round(cpuSeconds * 1e6));
        Interlocked.Add(ref busyTicks, busy);
        long seen;
        while (newestTime > (seen = Interlocked.Read(ref _newestTrainedTime)) &&
               Interlocked.CompareExchange(ref _newestTrainedTime, newestTime, seen) != seen) { }
    }

    public void Dispose() => Meter.Dispose();
}
