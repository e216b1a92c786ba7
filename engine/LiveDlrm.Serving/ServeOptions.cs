using System.Net;
using LiveDlrm.Online;
using LiveDlrm.Serving.Qos;

namespace LiveDlrm.Serving;

internal enum LabelPolicy { ImplicitNegative, Off }

/// <summary>How the colocated trainer is treated: <c>Off</c> = runs unthrottled and unpinned; <c>Throttle</c> = the
/// latency-driven duty-cycle controller only; <c>Full</c> = the resource plan's pinning and priorities, resctrl groups
/// where mounted, and the controller.</summary>
internal enum QosMode { Off, Throttle, Full }

/// <summary>Configuration of <c>livedlrm serve</c>, bound from the configuration section <see cref="Section"/>
/// (a JSON file given by <c>--config</c>, then command-line options, which win). <see cref="Validate"/> names the
/// offending option.</summary>
internal sealed class ServeOptions
{
    public const string Section = "Serve";

    /// <summary>The base model: a LiveDlrm checkpoint directory.</summary>
    public string Model { get; set; } = "";
    /// <summary>Directory the live adapters are saved to and restored from; null = not persisted. The server writes
    /// nowhere else.</summary>
    public string? Adapters { get; set; }
    /// <summary>HTTP/1.1 endpoint (JSON API, /metrics, health, admin). Loopback unless given otherwise.</summary>
    public string Listen { get; set; } = "127.0.0.1:7070";
    /// <summary>gRPC endpoint (HTTP/2 without TLS); default: the HTTP port + 1 on the same address.</summary>
    public string? GrpcListen { get; set; }
    /// <summary>File holding the admin bearer token; null or missing file = admin endpoints disabled.</summary>
    public string? AdminTokenFile { get; set; }

    public TimeSpan LabelWindow { get; set; } = TimeSpan.FromMinutes(2);
    public LabelPolicy Labels { get; set; } = LabelPolicy.ImplicitNegative;
    public QosMode Qos { get; set; } = QosMode.Full;
    /// <summary>The server-side P99 the QoS controller defends.</summary>
    public double QosTargetMs { get; set; } = 10;
    /// <summary>How an unpinned trainer under <see cref="QosMode.Full"/> yields the CPU (SCHED_IDLE or nice).</summary>
    public TrainerPriority QosTrainerPriority { get; set; } = TrainerPriority.Nice;
    public TimeSpan CheckpointInterval { get; set; } = TimeSpan.FromSeconds(60);
    /// <summary>Start from fresh adapters even if the adapter directory holds a checkpoint (it is replaced at the
    /// next save).</summary>
    public bool AdaptersReset { get; set; }
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>Start the trainer at startup (the bench turns it on and off through the admin API).</summary>
    public bool Trainer { get; set; } = true;

    public int MaxBatchEvents { get; set; } = 1024;
    public int MaxBagIds { get; set; } = 1024;
    public long MaxRequestBytes { get; set; } = 4 << 20;
    /// <summary>Served events remembered for their label (with their pooled embeddings and activations); beyond it
    /// the oldest is dropped unlabelled, so this bounds the label window in events.</summary>
    public int RingCapacity { get; set; } = 1 << 16;
    public int TrainerBatch { get; set; } = 256;
    /// <summary>Also train an additive update of the top MLP's last layer (saved with the adapters).</summary>
    public bool AdaptLastLayer { get; set; }
    /// <summary>Labelled events waiting for the trainer at most (oldest dropped beyond, counted).</summary>
    public int TrainerQueue { get; set; } = 8192;

    /// <summary>The fleet log (<c>nats://HOST:PORT</c>); null = a stand-alone node that trains on its own labels.
    /// With it, the node publishes every joined example to the log and trains only from the log (see docs/fleet.md).</summary>
    public string? Fleet { get; set; }
    /// <summary>This node's name in the fleet (its log consumer, the producer of its examples, its status entry).</summary>
    public string? ReplicaId { get; set; }
    /// <summary>Serve even when the fleet log cannot be reached at start (examples are spooled, the node joins the
    /// log when it becomes reachable); without it an unreachable log is a start-up error.</summary>
    public bool FleetOptional { get; set; }
    public string FleetStream { get; set; } = "LIVEDLRM_EXAMPLES";
    public string FleetSubject { get; set; } = "livedlrm.examples.default";
    /// <summary>Examples per training step of the log's replica (the same on every node of a fleet).</summary>
    public int FleetBatch { get; set; } = 64;
    /// <summary>Examples held locally while the log cannot take them (oldest dropped beyond, counted).</summary>
    public int FleetSpool { get; set; } = 100_000;
    /// <summary>Examples per log message at most (1 = one example per message); see docs/fleet.md for the bytes each
    /// choice costs.</summary>
    public int FleetMessageExamples { get; set; } = Serving.Fleet.PublisherBatching.Default.MaxExamples;
    /// <summary>How long, in milliseconds, the first example of a message waits for more: the bound batching adds to
    /// the replication lag.</summary>
    public int FleetLingerMs { get; set; } = (int)Serving.Fleet.PublisherBatching.Default.Linger.TotalMilliseconds;

    internal Serving.Fleet.PublisherBatching FleetBatching() => FleetMessageExamples == 1
        ? Serving.Fleet.PublisherBatching.None
        : new() { MaxExamples = FleetMessageExamples, Linger = TimeSpan.FromMilliseconds(FleetLingerMs) };

    public OnlineTrainerOptions TrainerOptions() => Fleet is null ? LocalTrainerOptions() : Serving.Fleet.FleetReplicaOptions.Deterministic(LocalTrainerOptions(), FleetBatch);

    OnlineTrainerOptions LocalTrainerOptions() => new()
    {
        BatchSize = TrainerBatch,
        QueueCapacity = Math.Max(TrainerQueue, TrainerBatch),
        AdaptLastLayer = AdaptLastLayer,
    };

    public IPEndPoint HttpEndPoint() => ParseEndPoint(Listen, "listen");

    public IPEndPoint GrpcEndPoint()
    {
        if (GrpcListen is not null) return ParseEndPoint(GrpcListen, "grpc-listen");
        var http = HttpEndPoint();
        return new IPEndPoint(http.Address, http.Port == 0 ? 0 : http.Port + 1);
    }

    static IPEndPoint ParseEndPoint(string text, string option)
    {
        string host = text, port = "";
        int colon = text.LastIndexOf(':');
        if (colon > 0) { host = text[..colon].Trim('[', ']'); port = text[(colon + 1)..]; }
        if (host == "localhost") host = "127.0.0.1";
        if (!IPAddress.TryParse(host, out var address) || !int.TryParse(port, out int p) || p is < 0 or > 65535)
            throw new ArgumentException($"--{option}: '{text}' is not ADDRESS:PORT (e.g. 127.0.0.1:7070)");
        return new IPEndPoint(address, p);
    }

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Model)) throw new ArgumentException("--model: a checkpoint directory is required");
        if (!Directory.Exists(Model)) throw new ArgumentException($"--model: '{Model}' is not a directory");
        _ = HttpEndPoint();
        _ = GrpcEndPoint();
        if (LabelWindow <= TimeSpan.Zero) throw new ArgumentException($"--label-window: must be positive, got {LabelWindow}");
        if (CheckpointInterval <= TimeSpan.Zero) throw new ArgumentException($"--checkpoint-interval: must be positive, got {CheckpointInterval}");
        if (ShutdownTimeout <= TimeSpan.Zero) throw new ArgumentException($"--shutdown-timeout: must be positive, got {ShutdownTimeout}");
        if (!(QosTargetMs > 0) || double.IsInfinity(QosTargetMs)) throw new ArgumentException($"--qos-target-ms: must be positive, got {QosTargetMs}");
        if (MaxBatchEvents < 1) throw new ArgumentException($"--max-batch-events: must be ≥ 1, got {MaxBatchEvents}");
        if (MaxBagIds < 1) throw new ArgumentException($"--max-bag-ids: must be ≥ 1, got {MaxBagIds}");
        if (MaxRequestBytes < 1024) throw new ArgumentException($"--max-request-bytes: must be ≥ 1024, got {MaxRequestBytes}");
        if (RingCapacity < 1) throw new ArgumentException($"--ring-capacity: must be ≥ 1, got {RingCapacity}");
        if (TrainerBatch < 1) throw new ArgumentException($"--trainer-batch: must be ≥ 1, got {TrainerBatch}");
        if (Adapters is not null && File.Exists(Adapters)) throw new ArgumentException($"--adapters: '{Adapters}' is a file, not a directory");
        if (Fleet is not null)
        {
            if (!Uri.TryCreate(Fleet, UriKind.Absolute, out var url) || url.Scheme != "nats")
                throw new ArgumentException($"--fleet: '{Fleet}' is not a NATS URL (e.g. nats://127.0.0.1:4222)");
            if (string.IsNullOrWhiteSpace(ReplicaId)) throw new ArgumentException("--replica-id: required with --fleet (this node's name in the fleet)");
            try { new Serving.Fleet.FleetReplicaOptions { ReplicaId = ReplicaId, BatchSize = FleetBatch }.Validate(); }
            catch (ArgumentException e) { throw new ArgumentException($"--{(FleetBatch < 1 ? "fleet-batch" : "replica-id")}: {e.Message.Split(" (Parameter")[0]}"); }
            if (FleetSpool < 1) throw new ArgumentException($"--fleet-spool: must be ≥ 1, got {FleetSpool}");
            if (FleetMessageExamples < 1 || FleetMessageExamples > 1 << 16) throw new ArgumentException($"--fleet-message-examples: must be in 1..65536, got {FleetMessageExamples}");
            if (FleetLingerMs < 0 || FleetLingerMs > 10_000) throw new ArgumentException($"--fleet-linger-ms: must be in 0..10000, got {FleetLingerMs}");
            if (AdaptLastLayer) throw new ArgumentException("--adapt-last-layer: not available with --fleet (the last-layer update is not part of the fleet's deterministic state)");
        }
        else if (ReplicaId is not null || FleetOptional) throw new ArgumentException($"--{(ReplicaId is not null ? "replica-id" : "fleet-optional")}: only meaningful with --fleet");
        if (AdminTokenFile is not null && Directory.Exists(AdminTokenFile)) throw new ArgumentException($"--admin-token-file: '{AdminTokenFile}' is a directory");
    }
}
