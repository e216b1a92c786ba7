using System.CommandLine;
using LiveDlrm.CommandLine;
using LiveDlrm.Serving;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm serve</c>: the options map onto <see cref="ServeOptions"/> (over a <c>--config</c> file);
/// the node itself is <see cref="ServingHost"/>. SIGTERM/SIGINT are the server's: a graceful drain, exit code 0.</summary>
internal sealed class ServeCommand : CliCommand, IHandlesOwnInterrupts
{
    readonly Option<string?> _model = Opt.Text("--model", "base model checkpoint directory", helpName: "DIR", required: true);
    readonly Option<string?> _adapters = Opt.Text("--adapters", "save the live adapters here and restore them on start (the only place the server writes)", helpName: "DIR");
    readonly Option<string?> _listen = Opt.Text("--listen", "HTTP/1.1 endpoint: JSON API, /metrics, /healthz, /readyz, /admin (default 127.0.0.1:7070)", helpName: "ADDR:PORT");
    readonly Option<string?> _grpcListen = Opt.Text("--grpc-listen", "gRPC endpoint, cleartext HTTP/2 (default: the HTTP port + 1)", helpName: "ADDR:PORT");
    readonly Option<string?> _config = Opt.Text("--config", "JSON file with a \"Serve\" section (command-line options win)", helpName: "FILE");
    readonly Option<string?> _token = Opt.Text("--admin-token-file", "bearer token for /admin/*; absent = admin endpoints disabled", helpName: "FILE");
    readonly Option<string?> _labelWindow = Opt.Text("--label-window", "how long a served request waits for its label (default 2m)", helpName: "DUR");
    readonly Option<string> _labels = Opt.Choice("--labels", "what an unlabelled request becomes after the window: a label-0 example, or nothing", "implicit-negative", "implicit-negative", "off");
    readonly Option<string> _qos = Opt.Choice("--qos", "full: plan, pinning, resctrl, controller; throttle: controller only; off", "full", "full", "throttle", "off");
    readonly Option<double?> _qosTarget = Opt.OptionalDouble("--qos-target-ms", "server-side P99 the QoS controller defends (default 10)", 0.001, 60_000);
    readonly Option<string> _qosPriority = Opt.Choice("--qos-trainer-priority", "full mode, unpinned trainer: nice = nice 10; idle = SCHED_IDLE (runs only on idle CPU)", "nice", "nice", "idle");
    readonly Option<string?> _interval = Opt.Text("--checkpoint-interval", "adapter save interval (default 60s); also saved on SIGTERM/SIGINT", helpName: "DUR");
    readonly Option<bool> _reset = Opt.Flag("--adapters-reset", "ignore saved adapters (they are replaced at the next save)");
    readonly Option<string?> _shutdown = Opt.Text("--shutdown-timeout", "graceful drain limit (default 10s)", helpName: "DUR");
    readonly Option<bool> _noTrainer = Opt.Flag("--no-trainer", "serve without starting the trainer");
    readonly Option<bool> _adaptLastLayer = Opt.Flag("--adapt-last-layer", "also train an additive update of the top MLP's last layer");
    readonly Option<int?> _maxEvents = Opt.OptionalInt("--max-batch-events", "events per request at most (default 1024)", 1, 1 << 20);
    readonly Option<int?> _maxBag = Opt.OptionalInt("--max-bag-ids", "ids per bag at most (default 1024)", 1, 1 << 20);
    readonly Option<long?> _maxBytes = Opt.OptionalLong("--max-request-bytes", "request body limit (default 4194304)", 1024, 1L << 31);
    readonly Option<int?> _ring = Opt.OptionalInt("--ring-capacity", "served events kept for their label (default 65536)", 1, 1 << 26);
    readonly Option<int?> _trainerBatch = Opt.OptionalInt("--trainer-batch", "events per trainer step (default 256)", 1, 1 << 20);
    readonly Option<string?> _fleet = Opt.Text("--fleet", "publish joined examples to this fleet log and train only from the whole log (NATS JetStream)", helpName: "URL");
    readonly Option<string?> _replicaId = Opt.Text("--replica-id", "this node's name in the fleet (required with --fleet)", helpName: "ID");
    readonly Option<bool> _fleetOptional = Opt.Flag("--fleet-optional", "serve even when the fleet log is unreachable at start (examples spool until it answers)");
    readonly Option<int?> _fleetSpool = Opt.OptionalInt("--fleet-spool", "examples held in memory while the fleet log cannot take them, oldest dropped beyond (default 100000)", 1, 1 << 26);
    readonly Option<int?> _fleetMessage = Opt.OptionalInt("--fleet-message-examples", "examples per fleet log message at most, 1 = one per message (default 256)", 1, 1 << 16);
    readonly Option<int?> _fleetLinger = Opt.OptionalInt("--fleet-linger-ms", "how long a message's first example waits for more before it is published (default 20)", 0, 10_000);
    readonly Option<int?> _fleetBatch = Opt.OptionalInt("--fleet-batch", "examples per training step of the fleet log, the same on every node (default 64)", 1, 1 << 20);

    public ServeCommand() : base("serve", "a live inference node: gRPC/HTTP scoring and feedback, the trainer under QoS, adapters saved and restored, /metrics")
    {
        foreach (var o in new Option[] { _model, _adapters, _listen, _grpcListen, _config, _token, _labelWindow, _labels, _qos, _qosTarget, _qosPriority, _interval, _reset,
                                         _shutdown, _noTrainer, _adaptLastLayer, _maxEvents, _maxBag, _maxBytes, _ring, _trainerBatch,
                                         _fleet, _replicaId, _fleetOptional, _fleetBatch, _fleetSpool, _fleetMessage, _fleetLinger })
            Add(o);
    }

    protected override int Run(ParseResult result)
    {
        var o = new Dictionary<string, string?>();
        void Set<T>(Option<T> option, string key, Func<T, string>? convert = null)
        {
            if (!Given(result, option)) return;
            var v = result.GetValue(option);
            if (v is not null) o[key] = convert is null ? Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) : convert(v);
        }
        ServeOptions options;
        try
        {
            Set(_model, nameof(ServeOptions.Model));
            Set(_adapters, nameof(ServeOptions.Adapters));
            Set(_listen, nameof(ServeOptions.Listen));
            Set(_grpcListen, nameof(ServeOptions.GrpcListen));
            Set(_token, nameof(ServeOptions.AdminTokenFile));
            Set(_labelWindow, nameof(ServeOptions.LabelWindow), v => ServeConfiguration.Duration("label-window", v!));
            Set(_labels, nameof(ServeOptions.Labels), v => v == "off" ? nameof(LabelPolicy.Off) : nameof(LabelPolicy.ImplicitNegative));
            Set(_qos, nameof(ServeOptions.Qos));
            Set(_qosTarget, nameof(ServeOptions.QosTargetMs));
            Set(_qosPriority, nameof(ServeOptions.QosTrainerPriority));
            Set(_interval, nameof(ServeOptions.CheckpointInterval), v => ServeConfiguration.Duration("checkpoint-interval", v!));
            Set(_shutdown, nameof(ServeOptions.ShutdownTimeout), v => ServeConfiguration.Duration("shutdown-timeout", v!));
            Set(_maxEvents, nameof(ServeOptions.MaxBatchEvents));
            Set(_maxBag, nameof(ServeOptions.MaxBagIds));
            Set(_maxBytes, nameof(ServeOptions.MaxRequestBytes));
            Set(_ring, nameof(ServeOptions.RingCapacity));
            Set(_trainerBatch, nameof(ServeOptions.TrainerBatch));
            Set(_fleet, nameof(ServeOptions.Fleet));
            Set(_replicaId, nameof(ServeOptions.ReplicaId));
            Set(_fleetBatch, nameof(ServeOptions.FleetBatch));
            Set(_fleetSpool, nameof(ServeOptions.FleetSpool));
            Set(_fleetMessage, nameof(ServeOptions.FleetMessageExamples));
            Set(_fleetLinger, nameof(ServeOptions.FleetLingerMs));
            if (result.GetValue(_fleetOptional)) o[nameof(ServeOptions.FleetOptional)] = "true";
            if (result.GetValue(_reset)) o[nameof(ServeOptions.AdaptersReset)] = "true";
            if (result.GetValue(_noTrainer)) o[nameof(ServeOptions.Trainer)] = "false";
            if (result.GetValue(_adaptLastLayer)) o[nameof(ServeOptions.AdaptLastLayer)] = "true";
            options = ServeConfiguration.Bind(result.GetValue(_config), o);
            options.Validate();
        }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        ServeRunner.Run(options, CliLogging.For("serve"));
        return ExitCodes.Ok;
    }
}
