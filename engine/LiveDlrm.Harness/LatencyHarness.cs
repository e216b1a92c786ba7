using System.Diagnostics;
using System.Globalization;
using LiveDlrm.Numa;
using LiveDlrm.Scheduling.Resctrl;
using Microsoft.Extensions.Logging;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>What the harness drives: the real DLRM model with its online LoRA trainer, or the embedding-lookup
/// proxy with the sparse Adagrad trainer proxy (the stand-ins from before the model existed).</summary>
internal enum LatencyWorkloadKind { DlrmLive, Proxy }

internal sealed record LatencyHarnessOptions
{
    public LatencyWorkloadKind Kind { get; init; } = LatencyWorkloadKind.DlrmLive;
    public DlrmWorkloadOptions Dlrm { get; init; } = new();
    public LookupWorkloadOptions Workload { get; init; } = new();
    public TrainerProxyOptions Trainer { get; init; } = new();
    /// <summary>Length of each measured mode run (after its warm-up).</summary>
    public TimeSpan ModeDuration { get; init; } = TimeSpan.FromSeconds(20);
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>Length of each trial of the maximum-QPS search.</summary>
    public TimeSpan SearchTrial { get; init; } = TimeSpan.FromSeconds(3);
    /// <summary>The modes run at this fraction of the maximum sustainable QPS.</summary>
    public double LoadFraction { get; init; } = 0.5;
    /// <summary>Skip the search and use this as the maximum sustainable QPS.</summary>
    public double? MaxQps { get; init; }
    /// <summary>A load is sustainable when everything is served and the median latency ≤ this × the median latency at
    /// light load (10 % of closed-loop capacity). The median, not P99: on a shared machine P99 is set by co-tenants'
    /// preemptions at any load, while the median only grows once the queue does (M/D/1: ≈ 5× at 90 % load).</summary>
    public double SloFactor { get; init; } = 5;
    /// <summary>QoS target for mode 3; default: the P99 measured in mode 1 (no trainer).</summary>
    public TimeSpan? QosTarget { get; init; }
    /// <summary>Trainer threads in modes 2 and 3 (same in both so samples/s compare); default: the plan's.</summary>
    public int? TrainerThreads { get; init; }
    public PlanOptions Plan { get; init; } = new();
    public string ResctrlRoot { get; init; } = ResctrlSupport.DefaultRoot;
    public int Seed { get; init; } = 1;
}

/// <summary>One line of the harness output / latency.json.</summary>
internal sealed record LatencyModeResult(
    string Workload, string Mode, double Qps, double AchievedQps, double MaxSustainableQps, long Requests, long Dropped,
    double P50Ms, double P99Ms, double P999Ms, double MaxMs, double? TrainerSamplesPerS, double? TrainerDutyCycleEnd,
    double? QosTargetMs, string? QosDecisions, string Placement, string HardwareQos)
{
    /// <summary>P99 of this mode / P99 of the no-trainer mode (the goal is ≤ 1.05 for trainer-qos).</summary>
    public double? P99VsNoTrainer { get; init; }
    /// <summary>Trainer samples/s of this mode / of trainer-unthrottled (the goal is ≥ 0.30 for trainer-qos).</summary>
    public double? TrainerRateVsUnthrottled { get; init; }
}

internal sealed record LatencyReport(string Machine, string Plan, string WorkloadDescription, string TrainerDescription,
                                   double ServiceP50Ms, double MaxSustainableQps, IReadOnlyList<TrialResult> Search,
                                   IReadOnlyList<LatencyModeResult> Modes)
{
    public LatencyModeResult Mode(string name) => Modes.Single(m => m.Mode == name);
}

/// <summary>The colocation measurement: find the maximum sustainable QPS of the inference workload, then at
/// <see cref="LatencyHarnessOptions.LoadFraction"/> of it record latency percentiles in three modes — (1) no
/// trainer, (2) trainer unthrottled and unpinned, (3) trainer under QoS (pinned by the plan, resctrl groups where
/// available, the AIMD controller on its duty cycle). The inference dispatcher and pool workers are pinned by the
/// plan in every mode, so only the trainer's treatment changes between modes.</summary>
internal static class LatencyHarness
{
    public const string ModeNoTrainer = "no-trainer", ModeUnthrottled = "trainer-unthrottled", ModeQos = "trainer-qos";

    public static LatencyReport Run(LatencyHarnessOptions o, ILogger logger)
    {
        // The harness narrates its run as finished lines (plan, search trials, one line per mode).
        void log(string line) => logger.LogInformation("{Line}", line);
        if (!(o.LoadFraction is > 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(o), o.LoadFraction, "LoadFraction must be in (0, 1]");
        if (o.SloFactor <= 1) throw new ArgumentOutOfRangeException(nameof(o), o.SloFactor, "SloFactor must be above 1");
        if (o.MaxQps is <= 0) throw new ArgumentOutOfRangeException(nameof(o), o.MaxQps, "MaxQps must be positive");

        var topology = Topology.Detect();
        var plan = ResourcePlan.Create(topology, o.Plan);
        log($"machine: {topology.Source}, {topology.Nodes.Count} node(s), {topology.Cores.Count} cores, {topology.Pus.Count} PUs");
        foreach (var line in plan.Describe().TrimEnd().Split('\n')) log("plan: " + line);
        bool canPin = ThreadAffinity.IsAvailable;
        Action? pinDispatcher = canPin ? () => plan.InferenceWorkerStart(0) : null;
        int poolThreads = plan.InferenceWorkerPus.Count - 1;   // the dispatcher is inference worker 0

        Action<int>? pinPoolWorker = canPin ? i => plan.InferenceWorkerStart(i + 1) : null;
        IInferenceWorkload workload;
        ILatencyTrainer trainer;
        IEnumerable<(Embeddings.EmbeddingTable Table, TableUser User)> tables;
        if (o.Kind == LatencyWorkloadKind.DlrmLive)
        {
            var live = new DlrmLiveWorkload(o.Dlrm, poolThreads, pinPoolWorker, logger);
            (workload, trainer) = (live, live.Trainer);
            // The online trainer merges into the served tables: they are inference memory, shared.
            tables = live.Tables.Select(t => (t, TableUser.Inference));
        }
        else
        {
            var proxy = new EmbeddingLookupWorkload(o.Workload, poolThreads, pinPoolWorker);
            SparseAdagradTrainerProxy proxyTrainer;
            try { proxyTrainer = new SparseAdagradTrainerProxy(o.Trainer); }
            catch { proxy.Dispose(); throw; }
            (workload, trainer) = (proxy, proxyTrainer);
            tables = proxy.Tables.Select(t => (t, TableUser.Inference)).Concat(proxyTrainer.Tables.Select(t => (t, TableUser.Trainer)));
        }
        using var disposeWorkload = workload;
        using var disposeTrainer = trainer;
        foreach (var (t, user) in tables)
        {
            var placement = plan.PlaceTable(t.Name, t.ByteSize, user);
            if (canPin) TableMemoryPlacement.Apply(t, placement);
        }
        log($"workload: {workload.Name}: {workload.Description}");
        log($"trainer:  {trainer.Name}: {trainer.Description}");

        var service = OpenLoopLoad.ClosedLoopServiceTimes(workload, o.SearchTrial < TimeSpan.FromSeconds(1) ? o.SearchTrial : TimeSpan.FromSeconds(1), pinDispatcher);
        double serviceP50 = service[service.Length / 2], serviceMean = service.Average();
        double capacity = 1000.0 / serviceMean;
        log(F($"closed loop: {service.Length} requests, service time P50 {serviceP50:F3} ms, mean {serviceMean:F3} ms → at most {capacity:F0} QPS"));

        var search = new List<TrialResult>();
        double maxQps;
        if (o.MaxQps is double given) { maxQps = given; log(F($"max sustainable QPS given: {maxQps:F0}")); }
        else
        {
            // Reference at light load: the latency floor including the dispatcher's wake-up, which on a busy machine
            // can exceed the service time itself.
            var light = OpenLoopLoad.Run(workload, capacity * 0.1, o.SearchTrial, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1), o.Seed, pinDispatcher);
            double floor = Math.Max(light.P50Ms, serviceP50);
            double limit = o.SloFactor * floor;
            log(F($"light load {light.OfferedQps:F0} QPS: P50 {light.P50Ms:F3} ms, P99 {light.P99Ms:F3} ms → sustainable means P50 ≤ {limit:F3} ms and nothing dropped"));
            maxQps = 0;
            foreach (double fraction in new[] { 0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15 })
            {
                var trial = OpenLoopLoad.Run(workload, capacity * fraction, o.SearchTrial, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1),
                                             o.Seed + 1 + search.Count, pinDispatcher);
                search.Add(trial);
                bool ok = trial.Dropped == 0 && trial.P50Ms <= limit;
                log(F($"search: {trial.OfferedQps,7:F0} QPS → P50 {trial.P50Ms:F3} ms, P99 {trial.P99Ms:F3} ms, dropped {trial.Dropped}: {(ok ? "sustainable" : "not sustainable")}"));
                if (ok) { maxQps = trial.OfferedQps; break; }
            }
            if (maxQps == 0)
            {
                maxQps = light.OfferedQps;
                log(F($"WARNING: no searched load met the criterion (machine too busy?); using the light load {maxQps:F0} QPS as the maximum"));
            }
        }
        double qps = maxQps * o.LoadFraction;
        log(F($"modes run at {o.LoadFraction:P0} of {maxQps:F0} = {qps:F0} QPS, {o.ModeDuration.TotalSeconds:F0} s each after {o.Warmup.TotalSeconds:F0} s warm-up"));

        int trainerThreads = o.TrainerThreads ?? plan.TrainerThreadPus.Count;
        if (trainer.MaxThreads is int most && trainerThreads > most)
        {
            if (o.TrainerThreads is not null) throw new ArgumentOutOfRangeException(nameof(o), o.TrainerThreads, $"{trainer.Name} runs at most {most} trainer thread(s)");
            trainerThreads = most;
        }
        var drain = TimeSpan.FromSeconds(2);
        var modes = new List<LatencyModeResult>();
        string placementText = $"inference PUs [{CpuList.Format(plan.InferencePus)}]";

        // (1) no trainer
        var baseline = OpenLoopLoad.Run(workload, qps, o.ModeDuration, o.Warmup, drain, o.Seed + 100, pinDispatcher);
        modes.Add(Result(ModeNoTrainer, baseline, null, null, null, null, placementText + ", no trainer", "none"));
        log(Line(modes[^1]));

        // (2) trainer unthrottled, unpinned: what colocation costs without isolation
        trainer.Start(trainerThreads);
        var (unthrottled, unthrottledRate) = Measure(() => OpenLoopLoad.Run(workload, qps, o.ModeDuration, o.Warmup, drain, o.Seed + 200, pinDispatcher));
        trainer.Stop();
        modes.Add(Result(ModeUnthrottled, unthrottled, unthrottledRate, 1.0, null, null,
                         placementText + $", trainer {trainerThreads} thread(s) unpinned", "none"));
        log(Line(modes[^1]));

        // (3) trainer under QoS: pinned per plan, resctrl if present, AIMD controller
        var target = o.QosTarget ?? TimeSpan.FromMilliseconds(baseline.P99Ms);
        var support = ResctrlSupport.Detect(o.ResctrlRoot);
        using var groups = ResctrlGroups.TryCreate(support, new ResctrlAllocation(), logger);
        trainer.Start(trainerThreads, canPin ? plan.TrainerThreadStart : null);
        groups?.AssignTrainer(trainer.ThreadIds);
        groups?.AssignInference(workload.ThreadIds);
        // A P99 needs samples: the window spans ≥ 200 expected requests (1–5 s), a decision needs half of them.
        var window = TimeSpan.FromSeconds(Math.Clamp(200 / qps, 1, 5));
        var qosOptions = new QosOptions { Target = target, Window = window, MinSamples = Math.Max(20, (long)(0.5 * qps * window.TotalSeconds)) };
        var controller = new LatencyQosController(trainer.Throttle, qosOptions, logger: logger);
        int dispatcherTid = 0;
        controller.Start(pinDispatcher);
        var (qos, qosRate) = Measure(() => OpenLoopLoad.Run(workload, qps, o.ModeDuration, o.Warmup, drain, o.Seed + 300,
            () =>
            {
                pinDispatcher?.Invoke();
                if (groups is not null) { dispatcherTid = ThreadAffinity.CurrentThreadId(); groups.AssignInference([dispatcherTid]); }
            },
            controller.RecordStopwatchTicks));
        controller.Stop();
        double dutyEnd = trainer.Throttle.IsPaused ? 0 : trainer.Throttle.DutyCycle;
        trainer.Stop();
        modes.Add(Result(ModeQos, qos, qosRate, dutyEnd, target.TotalMilliseconds, controller.Summary(),
                         placementText + $", trainer {trainerThreads} thread(s) on PUs [{CpuList.Format(plan.TrainerPus)}]",
                         groups is null ? $"none (resctrl {support.Reason})" : $"resctrl: inference '{groups.InferenceSchemata.Trim().Replace('\n', ' ')}', trainer '{groups.TrainerSchemata.Trim().Replace('\n', ' ')}'"));
        log(Line(modes[^1]));
        log("qos: " + controller.Summary());

        double p99Base = modes[0].P99Ms, rateBase = modes[1].TrainerSamplesPerS ?? double.NaN;
        for (int i = 0; i < modes.Count; i++)
            modes[i] = modes[i] with
            {
                P99VsNoTrainer = modes[i].P99Ms / p99Base,
                TrainerRateVsUnthrottled = modes[i].TrainerSamplesPerS is double r ? r / rateBase : null,
            };
        return new LatencyReport(topology.Describe(), plan.Describe(), workload.Description, trainer.Description, serviceP50, maxQps, search, modes);

        (TrialResult, double) Measure(Func<TrialResult> run)
        {
            // Trainer rate over the whole trial (warm-up included: the trainer does not know about warm-up).
            long s0 = trainer.SamplesProcessed, t0 = Stopwatch.GetTimestamp();
            var r = run();
            double seconds = (Stopwatch.GetTimestamp() - t0) / (double)Stopwatch.Frequency;
            return (r, (trainer.SamplesProcessed - s0) / seconds);
        }

        LatencyModeResult Result(string mode, TrialResult r, double? rate, double? duty, double? targetMs, string? decisions, string placement, string hw) =>
            new(workload.Name, mode, r.OfferedQps, r.AchievedQps, maxQps, r.Requests, r.Dropped, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs,
                rate, duty, targetMs, decisions, placement, hw);
    }

    /// <summary>The closing summary both `livedlrm latency` and `./build.sh bench latency` print: which workload
    /// ran, one line a mode, and the QoS mode against the goals.</summary>
    public static void PrintSummary(LatencyReport report, TextWriter w)
    {
        w.WriteLine();
        w.WriteLine(report.Modes[0].Workload == EmbeddingLookupWorkload.WorkloadName
            ? $"workload: {EmbeddingLookupWorkload.WorkloadName} — embedding-bag lookups standing in for DLRM Predict, trainer = sparse Adagrad proxy (not the DLRM/LoRA numbers)"
            : $"workload: {report.Modes[0].Workload} — {report.WorkloadDescription}; trainer: {report.TrainerDescription}");
        foreach (var m in report.Modes) w.WriteLine(Line(m));
        var qos = report.Mode(ModeQos);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"trainer-qos: P99 {qos.P99VsNoTrainer:F3}× no-trainer (goal ≤ 1.05), trainer at {qos.TrainerRateVsUnthrottled:P0} of unthrottled (goal ≥ 30 %)"));
    }

    public static string Line(LatencyModeResult m) =>
        F($"{m.Mode,-20} {m.Qps,7:F0} QPS  P50 {m.P50Ms,8:F3} ms  P99 {m.P99Ms,8:F3} ms  P99.9 {m.P999Ms,8:F3} ms  max {m.MaxMs,8:F3} ms")
        + (m.TrainerSamplesPerS is double s ? F($"  trainer {s,10:F0} samples/s") : "") + (m.Dropped > 0 ? F($"  DROPPED {m.Dropped}") : "");

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
