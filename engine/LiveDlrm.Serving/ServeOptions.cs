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

    public OnlineTrainerOptions TrainerOptions() => new()
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
        if (AdminTokenFile is not null && Directory.Exists(AdminTokenFile)) throw new ArgumentException($"--admin-token-file: '{AdminTokenFile}' is a directory");
    }
}
