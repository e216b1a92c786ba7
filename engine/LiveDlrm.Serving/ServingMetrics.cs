using System.Diagnostics.Metrics;

namespace LiveDlrm.Serving;

/// <summary>The server's counters, as <see cref="System.Diagnostics.Metrics"/> instruments of one <see cref="Meter"/>
/// per server, named by <paramref name="name"/> (so two servers in one process keep separate figures); /metrics exports
/// exactly this meter. Instrument names are the Prometheus names without the suffixes the exporter adds (the unit,
/// and <c>_total</c> for counters).</summary>
internal sealed class ServingMetrics : IDisposable
{
    public const string MeterName = "LiveDlrm.Serving";
    public const string RequestSecondsName = "livedlrm_serve_request_duration";
    public const string QosLatencySecondsName = "livedlrm_qos_request_latency";
    public const string GcPauseSecondsName = "livedlrm_gc_pause";

    public Meter Meter { get; }
    public Counter<long> Requests { get; }
    public Counter<long> Events { get; }
    public Counter<long> Errors { get; }
    public Histogram<double> RequestSeconds { get; }
    public Histogram<double> QosLatencySeconds { get; }
    public Counter<long> Feedback { get; }
    public Counter<long> ImplicitNegatives { get; }
    public Counter<long> ExpiredUnlabelled { get; }
    public Counter<long> Checkpoints { get; }
    public Counter<long> Reloads { get; }
    public Histogram<double> GcPauseSeconds { get; }

    /// <summary>Latency histogram buckets in seconds: 100 µs to ~3 s, ×√2 apart (the P99 of a node sits in the
    /// low milliseconds; a bucket edge every 41 % keeps a percentile read from buckets within that).</summary>
    public static readonly double[] LatencyBuckets = Enumerable.Range(0, 30).Select(i => 1e-4 * Math.Pow(Math.Sqrt(2), i)).ToArray();

    public ServingMetrics(string name = MeterName)
    {
        Meter = new Meter(name);
        Requests = Meter.CreateCounter<long>("livedlrm_serve_requests", description: "Score requests answered, by api (grpc, http) and outcome (ok, error).");
        Events = Meter.CreateCounter<long>("livedlrm_serve_events", description: "Events scored.");
        Errors = Meter.CreateCounter<long>("livedlrm_serve_errors", description: "Failed requests by kind (invalid_argument, too_large, unauthenticated, unavailable, internal).");
        RequestSeconds = Meter.CreateHistogram<double>(RequestSecondsName, unit: "s", description: "Server-side latency of score requests (decode, score, encode).");
        QosLatencySeconds = Meter.CreateHistogram<double>(QosLatencySecondsName, unit: "s", description: "Server-side latency of score requests plus the thread-pool wait at their arrival: what the QoS controller defends.");
        Feedback = Meter.CreateCounter<long>("livedlrm_feedback_labels", description: "Labels received, by result: joined (queued for training), unknown, late (after the label window: not trained).");
        ImplicitNegatives = Meter.CreateCounter<long>("livedlrm_feedback_implicit_negatives", description: "Served events with no label within the label window, trained as label 0.");
        ExpiredUnlabelled = Meter.CreateCounter<long>("livedlrm_feedback_expired_unlabelled", description: "Served events with no label within the label window, dropped (implicit negatives off).");
        Checkpoints = Meter.CreateCounter<long>("livedlrm_adapter_checkpoints", description: "Adapter checkpoints by result (saved, failed).");
        Reloads = Meter.CreateCounter<long>("livedlrm_model_reloads", description: "Base-model reloads by result (ok, failed).");
        GcPauseSeconds = Meter.CreateHistogram<double>(GcPauseSecondsName, unit: "s", description: "Stop-the-world pauses of the process's garbage collector (every request thread stops).");
    }

    public void Dispose() => Meter.Dispose();
}
