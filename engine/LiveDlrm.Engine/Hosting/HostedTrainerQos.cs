using LiveDlrm.Numa;
using LiveDlrm.Online;
using LiveDlrm.Scheduling;
using LiveDlrm.Scheduling.Resctrl;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Hosting;

/// <summary>One run of a hosted model's trainer under <see cref="TrainerQosOptions"/>: started with the trainer,
/// stopped with it. <see cref="TrainerQosMode.Full"/> pins the trainer per a <see cref="ResourcePlan"/> of this
/// machine and makes resctrl groups where resctrl is usable; every mode but Off runs a
/// <see cref="LatencyQosController"/> fed by scoring latency. Not thread-safe: the hosted model's lifecycle lock
/// serialises Start/Stop; <see cref="Record"/> is safe from any thread.</summary>
internal sealed class HostedTrainerQos
{
    readonly TrainerQosOptions _options;
    readonly ILogger _logger;
    LatencyQosController? _controller;
    ResctrlGroups? _groups;

    public HostedTrainerQos(TrainerQosOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
    }

    public TrainerQosOptions Options => _options;

    public void Start(LiveModel live)
    {
        bool full = _options.Mode == TrainerQosMode.Full;
        ResourcePlan? plan = full ? ResourcePlan.Create(Topology.Detect(), new PlanOptions()) : null;
        bool pin = plan is not null && ThreadAffinity.IsAvailable;
        live.Start(pin ? plan!.TrainerThreadStart : null);
        if (full)
        {
            if (!pin) _logger.LogInformation("trainer QoS: thread affinity unavailable; the trainer is not pinned");
            _groups = ResctrlGroups.TryCreate(ResctrlSupport.Detect(), new ResctrlAllocation(), _logger, prefix: $"livedlrm-host-{Environment.ProcessId}");
            if (_groups is not null)
            {
                var trainer = live.Trainer.ThreadIds;
                _groups.AssignTrainer(trainer);
                _groups.AssignInference(ProcessThreadIds().Except(trainer).ToList());
            }
        }
        if (_options.Mode != TrainerQosMode.Off)
        {
            var controller = new LatencyQosController(live.Trainer.Throttle, new QosOptions { Target = _options.TargetP99, MinSamples = 20 }, logger: _logger);
            controller.Start(pin ? plan!.PinToInference : null);
            Volatile.Write(ref _controller, controller);
        }
    }

    public void Stop(LiveModel live)
    {
        var controller = Interlocked.Exchange(ref _controller, null);
        controller?.Stop();
        controller?.Dispose();
        live.Stop();
        _groups?.Dispose();
        _groups = null;
    }

    /// <summary>One scoring latency in Stopwatch ticks (ignored when no controller runs).</summary>
    public void Record(long ticks) => Volatile.Read(ref _controller)?.RecordStopwatchTicks(ticks);

    static IEnumerable<int> ProcessThreadIds()
    {
        const string dir = "/proc/self/task";
        if (!Directory.Exists(dir)) return [];
        return Directory.EnumerateDirectories(dir).Select(Path.GetFileName).Select(n => int.TryParse(n, out int t) ? t : 0).Where(t => t > 0).ToList();
    }
}
