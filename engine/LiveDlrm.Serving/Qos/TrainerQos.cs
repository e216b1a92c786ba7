using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using LiveDlrm.Numa;
using LiveDlrm.Scheduling;
using LiveDlrm.Scheduling.Resctrl;
using LiveDlrm.Serving.Node;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Serving.Qos;

/// <summary>How an unpinned trainer thread under <see cref="QosMode.Full"/> yields the CPU to everything else.
/// <c>Idle</c>: the kernel's SCHED_IDLE policy — it runs only on CPU time no normal thread wants, and a waking
/// request thread (or any other process, such as a load generator or a client on the same machine) preempts it at
/// once. <c>Nice</c>: nice <see cref="TrainerQos.UnpinnedTrainerNice"/> — about a tenth of a nice-0 thread's weight,
/// but a waking thread may wait out the rest of its slice, and it keeps that share of a fully busy CPU. Nice is the
/// default: on a saturated host a SCHED_IDLE thread may wait long for a CPU, and the runtime's stop-the-world
/// suspensions wait for it too; in interleaved runs there it was not ahead (docs/serving.md).</summary>
internal enum TrainerPriority { Nice, Idle }

/// <summary>
/// The colocated trainer under QoS in the serving process, driven by the server's own measured request latency:
/// in <see cref="QosMode.Full"/> the <see cref="ResourcePlan"/> pins the trainer thread to its PUs with its nice
/// value (where pinning can isolate anything, see <see cref="PinsTrainer"/>; otherwise the trainer runs unpinned,
/// at nice <see cref="UnpinnedTrainerNice"/> or under SCHED_IDLE, as <see cref="Priority"/> says), resctrl groups separate cache and bandwidth where resctrl is mounted, and
/// a <see cref="LatencyQosController"/> sets the trainer's duty cycle from the windowed P99 of server-side request
/// latency (handler time plus the thread pool's queueing delay); <see cref="QosMode.Throttle"/> keeps only the
/// controller; <see cref="QosMode.Off"/> runs the trainer unthrottled and unpinned. The mode can change at run time
/// (the trainer restarts under the new treatment).
/// </summary>
internal sealed class TrainerQos : IDisposable
{
    readonly ResourcePlan _plan;
    readonly ResctrlSupport _resctrl;
    double _targetMs;
    readonly ILogger _log;
    readonly object _lock = new();
    ResctrlGroups? _groups;
    LatencyQosController? _controller;
    ILiveNode? _node;
    long _cutsBefore, _increasesBefore, _pausesBefore, _resumesBefore, _holdsBefore;

    public QosMode Mode { get; private set; }
    public TrainerPriority Priority { get; private set; }
    /// <summary>True while <see cref="WithTrainerPaused"/> holds the trainer (it is still wanted).</summary>
    public bool PausedForRead { get; private set; }
    public double TargetMs => _targetMs;
    public bool TrainerWanted { get; private set; }
    public ResourcePlan Plan => _plan;

    /// <summary>Whether <see cref="QosMode.Full"/> pins the trainer (and the controller) per the plan. Request
    /// threads are thread-pool threads the plan does not pin, so pinning the trainer only confines it: it isolates
    /// something only when the request threads have at least two other physical cores to run on. With one (a 2-core
    /// machine) the trainer pinned to the other core takes half of the CPU the request threads need at high load
    /// with equal priority, and the scheduler cannot move them away from it; measured on such a machine
    /// (docs/serving.md) the pinned trainer made the 80 % load tail worse than an unpinned, unthrottled one.</summary>
    public bool PinsTrainer { get; }
    /// <summary>The nice value of an unpinned trainer under <see cref="QosMode.Full"/> with <see cref="TrainerPriority.Nice"/>
    /// (or where the kernel refuses SCHED_IDLE): a nice-10 thread weighs about a tenth of a nice-0 one.</summary>
    public const int UnpinnedTrainerNice = 10;

    public TrainerQos(QosMode mode, double targetMs, ILogger log, string resctrlRoot = ResctrlSupport.DefaultRoot, TrainerPriority priority = TrainerPriority.Nice)
    {
        Mode = mode; _targetMs = targetMs; _log = log; Priority = priority;
        var topology = Topology.Detect();
        _plan = ResourcePlan.Create(topology, new PlanOptions());
        _resctrl = ResctrlSupport.Detect(resctrlRoot);
        int inferenceCores = _plan.InferencePus.Select(p => topology.Pu(p).Core).Distinct().Count();
        PinsTrainer = ThreadAffinity.IsAvailable && !_plan.SharesPus && inferenceCores >= 2;
        string pinning = PinsTrainer ? "trainer pinned per plan"
            : !ThreadAffinity.IsAvailable ? "trainer NOT pinned (no libc affinity)"
            : F($"trainer NOT pinned but {PriorityText(priority)} (request threads would keep {inferenceCores} core(s) beside it: pinning would isolate nothing)");
        var sb = new StringBuilder();
        sb.AppendLine($"qos: mode {mode.ToString().ToLowerInvariant()}, target server-side P99 {targetMs.ToString("G4", CultureInfo.InvariantCulture)} ms");
        sb.AppendLine($"machine: {topology.Source}, {topology.Nodes.Count} node(s), {topology.Cores.Count} cores, {topology.Pus.Count} PUs");
        foreach (var line in _plan.Describe().TrimEnd().Split('\n')) sb.AppendLine("plan: " + line);
        sb.AppendLine(mode == QosMode.Full
            ? $"applied in full mode: {pinning}, resctrl {(_resctrl.IsUsable ? "groups per trainer start" : "absent: " + _resctrl.Reason)}, duty-cycle controller on"
            : mode == QosMode.Throttle ? "applied: duty-cycle controller only (no pinning, no resctrl)" : "applied: nothing (trainer unthrottled and unpinned)");
        _log.LogInformation("{Plan}", sb.ToString().TrimEnd());
    }

    /// <summary>Starts <paramref name="node"/>'s trainer under the current mode.</summary>
    public void Attach(ILiveNode node)
    {
        lock (_lock)
        {
            _node = node;
            TrainerWanted = true;
            StartLocked();
        }
    }

    /// <summary>Stops the attached node's trainer (and the controller); returns the node it was attached to.</summary>
    public ILiveNode? Detach()
    {
        lock (_lock)
        {
            StopLocked(hold: false);
            TrainerWanted = false;
            var n = _node;
            _node = null;
            return n;
        }
    }

    /// <summary>Restarts the trainer under <paramref name="mode"/> (and a new controller target and unpinned-trainer
    /// priority, if given); <paramref name="running"/> false leaves it stopped.</summary>
    public void Set(ILiveNode node, QosMode mode, bool running, double? targetMs = null, TrainerPriority? priority = null)
    {
        if (targetMs is double t && !(t > 0 && double.IsFinite(t))) throw new ArgumentOutOfRangeException(nameof(targetMs), t, "QoS target must be positive");
        lock (_lock)
        {
            StopLocked(hold: false);
            _node = node;
            Mode = mode;
            if (targetMs is double target) _targetMs = target;
            if (priority is TrainerPriority p) Priority = p;
            TrainerWanted = running;
            if (running) StartLocked();
        }
    }

    void StartLocked()
    {
        var node = _node!;
        bool full = Mode == QosMode.Full;
        bool pin = full && PinsTrainer;
        node.StartTrainer(pin ? _plan.TrainerThreadStart
            : full && ThreadAffinity.IsAvailable ? _ => LowerCurrentThread(Priority, _log) : null);
        if (full)
        {
            _groups = ResctrlGroups.TryCreate(_resctrl, new ResctrlAllocation(), _log, prefix: $"livedlrm-serve-{Environment.ProcessId}");
            if (_groups is not null)
            {
                var trainer = node.TrainerThreadIds;
                _groups.AssignTrainer(trainer);
                _groups.AssignInference(ProcessThreadIds().Except(trainer).ToList());
            }
        }
        if (Mode != QosMode.Off && node.Throttle is { } throttle)
        {
            var options = new QosOptions { Target = TimeSpan.FromMilliseconds(_targetMs), MinSamples = 20 };
            _controller = new LatencyQosController(throttle, options, logger: _log);
            _controller.Start(pin ? _plan.PinToInference : null);
        }
    }

    /// <summary>Fleet mode: the node's only trainer is the fleet replica's applying thread, which gets the same
    /// treatment as the colocated trainer minus pinning — in <see cref="QosMode.Full"/> its nice value or SCHED_IDLE
    /// (<see cref="Priority"/>), applied on that thread through <paramref name="onReplicaThread"/>, and outside
    /// <see cref="QosMode.Off"/> a <see cref="LatencyQosController"/> on <paramref name="throttle"/> driven by the
    /// server's request latency. The throttle only delays the log's entries, so replicas still agree bit for bit.</summary>
    public void AttachFleetReplica(ITrainerThrottle throttle, Action<Action> onReplicaThread)
    {
        lock (_lock)
        {
            if (Mode == QosMode.Full && ThreadAffinity.IsAvailable)
            {
                var priority = Priority;
                onReplicaThread(() => LowerCurrentThread(priority, _log));
            }
            if (Mode != QosMode.Off)
            {
                _controller = new LatencyQosController(throttle, new QosOptions { Target = TimeSpan.FromMilliseconds(_targetMs), MinSamples = 20 }, logger: _log);
                _controller.Start(null);
            }
        }
    }

    /// <summary>Runs <paramref name="read"/> with the trainer stopped at a step boundary (labels held meanwhile), then
    /// restarts it as it was: the single-writer adapters can be read whole.</summary>
    public T WithTrainerPaused<T>(Func<T> read)
    {
        lock (_lock)
        {
            bool running = TrainerWanted && _node is not null;
            if (running) { PausedForRead = true; StopLocked(hold: true); }
            try { return read(); }
            finally { if (running) { StartLocked(); PausedForRead = false; } }
        }
    }

    void StopLocked(bool hold)
    {
        if (_controller is { } c)
        {
            c.Stop();
            _cutsBefore += c.Cuts; _increasesBefore += c.Increases; _pausesBefore += c.Pauses; _resumesBefore += c.Resumes; _holdsBefore += c.Holds;
            _controller = null;
        }
        _node?.StopTrainer(hold);
        _groups?.Dispose();
        _groups = null;
    }

    static string PriorityText(TrainerPriority p) => p == TrainerPriority.Idle ? "SCHED_IDLE" : F($"nice {UnpinnedTrainerNice}");

    /// <summary>Runs on the trainer thread as it starts: SCHED_IDLE (falling back to the nice value where the kernel
    /// refuses it), or the nice value.</summary>
    static void LowerCurrentThread(TrainerPriority priority, ILogger log)
    {
        if (priority == TrainerPriority.Idle)
        {
            if (ThreadAffinity.TrySetCurrentThreadIdlePolicy()) return;
            log.LogWarning("qos: the kernel refused SCHED_IDLE for the trainer thread; it runs at nice {Nice} instead", UnpinnedTrainerNice);
        }
        ThreadAffinity.TrySetCurrentThreadNice(UnpinnedTrainerNice);
    }

    static IEnumerable<int> ProcessThreadIds()
    {
        const string dir = "/proc/self/task";
        if (!Directory.Exists(dir)) return [];
        return Directory.EnumerateDirectories(dir).Select(Path.GetFileName).Select(n => int.TryParse(n, out int t) ? t : 0).Where(t => t > 0).ToList();
    }

    /// <summary>One served request's server-side latency (Stopwatch ticks).</summary>
    public void Record(long ticks) => Volatile.Read(ref _controller)?.RecordStopwatchTicks(ticks);

    public double DutyCycle
    {
        get
        {
            var t = _node?.Throttle;
            return t is null ? 0 : t.IsPaused ? 0 : t.DutyCycle;
        }
    }

    public IEnumerable<Measurement<long>> Decisions()
    {
        var c = _controller;
        yield return new(_cutsBefore + (c?.Cuts ?? 0), new KeyValuePair<string, object?>("action", "cut"));
        yield return new(_increasesBefore + (c?.Increases ?? 0), new KeyValuePair<string, object?>("action", "increase"));
        yield return new(_pausesBefore + (c?.Pauses ?? 0), new KeyValuePair<string, object?>("action", "pause"));
        yield return new(_resumesBefore + (c?.Resumes ?? 0), new KeyValuePair<string, object?>("action", "resume"));
        yield return new(_holdsBefore + (c?.Holds ?? 0), new KeyValuePair<string, object?>("action", "hold"));
    }

    public string Summary() => _controller?.Summary() ?? "no controller";

    public void Dispose()
    {
        lock (_lock) StopLocked(hold: false);
    }

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
