using System.Diagnostics;
using System.Globalization;
using HdrHistogram;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Scheduling;

/// <summary>Settings of <see cref="LatencyQosController"/>. The defaults decide ten times a second over the last
/// second of requests: slow enough that one decision's effect is visible in the next window, fast enough that a
/// burst is answered within ~100 ms.</summary>
internal sealed record QosOptions
{
    /// <summary>The inference latency percentile the controller defends (P99 by default) must stay at or under this.</summary>
    public required TimeSpan Target { get; init; }
    public double Percentile { get; init; } = 99.0;
    /// <summary>Length of the sliding window the percentile is taken over.</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>The window slides in this many steps (old sub-windows drop out whole).</summary>
    public int SubWindows { get; init; } = 5;
    public TimeSpan DecisionInterval { get; init; } = TimeSpan.FromMilliseconds(100);
    /// <summary>Fewer samples than this in the window: no decision (a P99 of ten samples is noise).</summary>
    public long MinSamples { get; init; } = 50;
    /// <summary>Multiplicative decrease of the duty cycle when the percentile is over target.</summary>
    public double DecreaseFactor { get; init; } = 0.5;
    /// <summary>Additive increase of the duty cycle per decision while under target.</summary>
    public double IncreaseStep { get; init; } = 0.05;
    public double MinDutyCycle { get; init; } = 0.05;
    public double InitialDutyCycle { get; init; } = 1.0;
    /// <summary>Percentile above Target × this = overload: the trainer is paused outright.</summary>
    public double OverloadFactor { get; init; } = 3.0;
    /// <summary>How sure the controller must be that the percentile is over target before it cuts, in standard
    /// deviations of the binomial count of requests over target. Without it a window's P99 — the 2nd-largest of 200
    /// samples — exceeds a target equal to the true P99 about half the time, and AIMD would grind the trainer to
    /// its minimum on noise alone.</summary>
    public double Confidence { get; init; } = 2.0;

    internal void Validate()
    {
        if (Target <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(Target), Target, "QoS target must be positive");
        if (Percentile is <= 0 or >= 100) throw new ArgumentOutOfRangeException(nameof(Percentile), Percentile, "percentile must be in (0, 100)");
        if (Window <= TimeSpan.Zero || SubWindows < 1) throw new ArgumentOutOfRangeException(nameof(Window), $"window {Window} in {SubWindows} steps is not a window");
        if (DecisionInterval <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(DecisionInterval), DecisionInterval, "must be positive");
        if (DecreaseFactor is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(DecreaseFactor), DecreaseFactor, "must be in (0, 1)");
        if (IncreaseStep is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(IncreaseStep), IncreaseStep, "must be in (0, 1]");
        if (MinDutyCycle is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(MinDutyCycle), MinDutyCycle, "must be in (0, 1]");
        if (InitialDutyCycle < MinDutyCycle || InitialDutyCycle > 1) throw new ArgumentOutOfRangeException(nameof(InitialDutyCycle), InitialDutyCycle, $"must be in [MinDutyCycle, 1]");
        if (OverloadFactor <= 1) throw new ArgumentOutOfRangeException(nameof(OverloadFactor), OverloadFactor, "must be above 1");
        if (Confidence < 0 || double.IsNaN(Confidence)) throw new ArgumentOutOfRangeException(nameof(Confidence), Confidence, "must be non-negative");
        if (MinSamples < 1) throw new ArgumentOutOfRangeException(nameof(MinSamples), MinSamples, "must be at least 1");
    }
}

internal enum QosAction { Hold, Increase, Cut, Pause, StayPaused, Resume }

internal readonly record struct QosDecision(QosAction Action, double DutyCycle, double PercentileMs, long Samples);

/// <summary>Software QoS for a colocated trainer, portable to any machine: inference latencies go into a sliding
/// window of HdrHistograms; every <see cref="QosOptions.DecisionInterval"/> the windowed percentile sets the trainer's
/// duty cycle by AIMD — cut multiplicatively when over target, creep up additively while under, pause outright when
/// over <see cref="QosOptions.OverloadFactor"/> × target and resume at the minimum duty once under target again.
/// "Over target" is a statistical call: the count of requests slower than the target must exceed the count the
/// percentile allows (1 % of n for P99) by <see cref="QosOptions.Confidence"/> binomial standard deviations; "under"
/// means at most the allowed count; in between the controller holds.
/// After a cut or pause the window is cleared so the next decision judges only latencies measured after it.
/// Time comes from an injected <see cref="TimeProvider"/> so behaviour is testable without sleeping.</summary>
internal sealed class LatencyQosController : IDisposable
{
    const long HighestTrackableMicros = 60_000_000;   // one minute: anything longer is clamped, not lost

    readonly ITrainerThrottle _throttle;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    readonly LongHistogram[] _ring;
    readonly long[] _overTarget;   // per sub-window: requests slower than the target
    readonly long _targetMicros;
    readonly LongHistogram _merged;
    readonly long _subWindowTicks, _decisionTicks;
    readonly object _lock = new();
    long _slot;            // absolute sub-window number the ring's current slot holds
    long _nextDecision;
    Thread? _thread;
    volatile bool _stop;

    public QosOptions Options { get; }
    long _decisions, _increases, _cuts, _pauses, _resumes, _holds;
    public long Decisions => Interlocked.Read(ref _decisions);
    public long Increases => Interlocked.Read(ref _increases);
    public long Cuts => Interlocked.Read(ref _cuts);
    public long Pauses => Interlocked.Read(ref _pauses);
    public long Resumes => Interlocked.Read(ref _resumes);
    /// <summary>Decisions that changed nothing: too few samples, or still overloaded while paused.</summary>
    public long Holds => Interlocked.Read(ref _holds);
    public QosDecision? Last { get; private set; }

    public LatencyQosController(ITrainerThrottle throttle, QosOptions options, TimeProvider? time = null, ILogger? logger = null)
    {
        options.Validate();
        _throttle = throttle; Options = options; _time = time ?? TimeProvider.System; _logger = logger ?? NullLogger.Instance;
        _ring = Enumerable.Range(0, options.SubWindows).Select(_ => new LongHistogram(HighestTrackableMicros, 2)).ToArray();
        _merged = new LongHistogram(HighestTrackableMicros, 2);
        _overTarget = new long[options.SubWindows];
        _targetMicros = (long)options.Target.TotalMicroseconds;
        long freq = _time.TimestampFrequency;
        _subWindowTicks = Math.Max(1, (long)(options.Window.TotalSeconds * freq / options.SubWindows));
        _decisionTicks = Math.Max(1, (long)(options.DecisionInterval.TotalSeconds * freq));
        long now = _time.GetTimestamp();
        _slot = now / _subWindowTicks;
        _nextDecision = now + _decisionTicks;
        throttle.SetDutyCycle(options.InitialDutyCycle);
    }

    /// <summary>Records one inference latency (thread-safe).</summary>
    public void Record(TimeSpan latency) => RecordMicros((long)latency.TotalMicroseconds);

    /// <summary>Records one latency given in Stopwatch ticks.</summary>
    public void RecordStopwatchTicks(long ticks) => RecordMicros(ticks * 1_000_000 / Stopwatch.Frequency);

    void RecordMicros(long micros)
    {
        micros = Math.Clamp(micros, 1, HighestTrackableMicros);
        lock (_lock)
        {
            Advance(_time.GetTimestamp());
            _ring[_slot % _ring.Length].RecordValue(micros);
            if (micros > _targetMicros) _overTarget[_slot % _ring.Length]++;
        }
    }

    /// <summary>Drops sub-windows that slid out of the window.</summary>
    void Advance(long now)
    {
        long slot = now / _subWindowTicks;
        if (slot <= _slot) return;
        for (long s = Math.Max(_slot + 1, slot - _ring.Length + 1); s <= slot; s++)
        {
            _ring[s % _ring.Length].Reset();
            _overTarget[s % _ring.Length] = 0;
        }
        _slot = slot;
    }

    /// <summary>The windowed percentile in milliseconds and the sample count, now.</summary>
    public (double Ms, long Samples) WindowPercentile()
    {
        var (ms, n, _) = Window();
        return (ms, n);
    }

    (double Ms, long Samples, long OverTarget) Window()
    {
        lock (_lock)
        {
            Advance(_time.GetTimestamp());
            _merged.Reset();
            foreach (var h in _ring) _merged.Add(h);
            long n = _merged.TotalCount;
            return (n == 0 ? 0 : _merged.GetValueAtPercentile(Options.Percentile) / 1000.0, n, _overTarget.Sum());
        }
    }

    /// <summary>Makes a decision if the decision interval has elapsed since the last one; returns it, or null when
    /// it is not yet time. Called by <see cref="Start"/>'s thread, or by a test driving a manual clock.</summary>
    public QosDecision? Tick()
    {
        long now = _time.GetTimestamp();
        if (now < _nextDecision) return null;
        _nextDecision = now + _decisionTicks;
        return Decide();
    }

    QosDecision Decide()
    {
        var (p, n, over) = Window();
        double target = Options.Target.TotalMilliseconds;
        double duty = _throttle.DutyCycle;
        double allowed = n * (1 - Options.Percentile / 100);
        bool surelyOver = over > allowed + Options.Confidence * Math.Sqrt(allowed * (Options.Percentile / 100));
        bool under = over <= allowed;
        QosAction action;
        if (n < Options.MinSamples) action = QosAction.Hold;
        else if (surelyOver && p > target * Options.OverloadFactor)
            action = _throttle.IsPaused ? QosAction.StayPaused : QosAction.Pause;
        else if (_throttle.IsPaused)
            action = under ? QosAction.Resume : QosAction.StayPaused;
        else if (surelyOver) action = QosAction.Cut;
        else if (under) action = QosAction.Increase;
        else action = QosAction.Hold;

        switch (action)
        {
            case QosAction.Hold: Interlocked.Increment(ref _holds); break;
            case QosAction.StayPaused: Interlocked.Increment(ref _holds); ClearWindow(); break;
            case QosAction.Increase:
                duty = Math.Min(1.0, duty + Options.IncreaseStep);
                _throttle.SetDutyCycle(duty);
                Interlocked.Increment(ref _increases);
                break;
            case QosAction.Cut:
                duty = Math.Max(Options.MinDutyCycle, duty * Options.DecreaseFactor);
                _throttle.SetDutyCycle(duty);
                Interlocked.Increment(ref _cuts);
                ClearWindow();
                break;
            case QosAction.Pause:
                _throttle.Pause();
                Interlocked.Increment(ref _pauses);
                ClearWindow();
                break;
            case QosAction.Resume:
                duty = Options.MinDutyCycle;
                _throttle.SetDutyCycle(duty);
                _throttle.Resume();
                Interlocked.Increment(ref _resumes);
                break;
        }
        Interlocked.Increment(ref _decisions);
        var decision = new QosDecision(action, _throttle.IsPaused ? 0 : duty, p, n);
        Last = decision;
        if (action is QosAction.Cut or QosAction.Pause or QosAction.Resume)
            _logger.LogInformation("qos: P{Percentile} {Latency} ms vs target {Target} ms, {Over} of {Requests} requests over → {Action}, trainer duty {Duty}",
                Options.Percentile.ToString("G3", CultureInfo.InvariantCulture), p.ToString("F2", CultureInfo.InvariantCulture),
                target.ToString("F2", CultureInfo.InvariantCulture), over, n, action.ToString().ToLowerInvariant(),
                decision.DutyCycle.ToString("P0", CultureInfo.InvariantCulture));
        return decision;
    }

    void ClearWindow()
    {
        lock (_lock)
        {
            foreach (var h in _ring) h.Reset();
            Array.Clear(_overTarget);
        }
    }

    /// <summary>Counters as one line, for logs and the harness output.</summary>
    public string Summary() => string.Create(CultureInfo.InvariantCulture,
        $"decisions {Decisions}: {Increases} increase, {Cuts} cut, {Pauses} pause, {Resumes} resume, {Holds} hold; duty now {(_throttle.IsPaused ? 0 : _throttle.DutyCycle):P0}");

    /// <summary>Runs <see cref="Tick"/> on a background thread every decision interval; <paramref name="onStart"/>
    /// runs on that thread first (e.g. the plan's pin to inference PUs, so the controller is not starved by the
    /// trainer it throttles).</summary>
    public void Start(Action? onStart = null)
    {
        if (_thread is not null) throw new InvalidOperationException("controller already started");
        _thread = new Thread(() =>
        {
            onStart?.Invoke();
            while (!_stop)
            {
                Tick();
                Thread.Sleep(Options.DecisionInterval / 4);
            }
        }) { IsBackground = true, Name = "livedlrm-qos" };
        _thread.Start();
    }

    public void Stop() { _stop = true; _thread?.Join(); _thread = null; }

    public void Dispose() => Stop();
}
