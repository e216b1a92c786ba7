using System.Diagnostics.Metrics;

namespace LiveDlrm.Serving.Fleet;

/// <summary>The fleet's counters as <see cref="System.Diagnostics.Metrics"/> instruments of one meter per node
/// (exported on <c>/metrics</c> beside the server's). Names follow the serving meter's convention: the Prometheus
/// name without the unit and <c>_total</c> suffixes the exporter adds.</summary>
internal sealed class FleetMetrics : IDisposable
{
    public const string MeterName = "LiveDlrm.Fleet";

    public Meter Meter { get; }
    public Counter<long> Published { get; }
    public Counter<long> PublishDuplicates { get; }
    public Counter<long> PublishErrors { get; }
    public Counter<long> PublishRetries { get; }
    public Counter<long> SpoolDropped { get; }
    public Counter<long> SpoolRecovered { get; }
    public Counter<long> Consumed { get; }
    public Counter<long> AppliedExamples { get; }
    public Counter<long> ReadErrors { get; }
    public Histogram<double> ReplicationLag { get; }

    public FleetMetrics(Func<long> spoolLength, Func<long> appliedSequence, Func<double> fingerprintAge, string name = MeterName)
    {
        Meter = new Meter(name);
        Published = Meter.CreateCounter<long>("livedlrm_fleet_published_examples", description: "Examples this node appended to the fleet log.");
        PublishDuplicates = Meter.CreateCounter<long>("livedlrm_fleet_publish_duplicates", description: "Publishes the log recognised as a retry of one it already had (not appended again).");
        PublishErrors = Meter.CreateCounter<long>("livedlrm_fleet_publish_errors", description: "Failed publish attempts (each is retried from the spool).");
        PublishRetries = Meter.CreateCounter<long>("livedlrm_fleet_publish_retries", description: "Publishes attempted again after a failure (same message id).");
        SpoolDropped = Meter.CreateCounter<long>("livedlrm_fleet_spool_dropped", description: "Examples dropped unpublished because the local spool was full (oldest first).");
        SpoolRecovered = Meter.CreateCounter<long>("livedlrm_fleet_spool_recovered", description: "Examples found in the on-disk spool at start (spooled before a crash) and published again.");
        Consumed = Meter.CreateCounter<long>("livedlrm_fleet_consumed_messages", description: "Log messages this replica read (redeliveries included).");
        AppliedExamples = Meter.CreateCounter<long>("livedlrm_fleet_applied_examples", description: "Examples this replica trained on from the log.");
        ReadErrors = Meter.CreateCounter<long>("livedlrm_fleet_read_errors", description: "Failed reads of the log (the reader re-reads from its position).");
        ReplicationLag = Meter.CreateHistogram<double>("livedlrm_fleet_replication_lag", unit: "s", description: "Seconds from an example's append to the log to its training on this replica.");
        Meter.CreateObservableGauge("livedlrm_fleet_spool_length", spoolLength, description: "Examples waiting in the local spool to be published.");
        Meter.CreateObservableGauge("livedlrm_fleet_applied_sequence", appliedSequence, description: "The last log sequence reflected in this replica's adapters.");
        Meter.CreateObservableGauge("livedlrm_fleet_fingerprint_age", fingerprintAge, unit: "s", description: "Seconds since this replica last computed its adapter fingerprint (at a checkpoint).");
    }

    /// <summary>Adds the consumer-lag gauges of a replica that knows the log's end (a serving node polls it).</summary>
    public void ObserveLag(Func<long> messages, Func<double> seconds, Func<int> connected)
    {
        Meter.CreateObservableGauge("livedlrm_fleet_consumer_lag_messages", messages, description: "Log messages appended after the last one reflected in this replica's adapters.");
        Meter.CreateObservableGauge("livedlrm_fleet_consumer_lag", seconds, unit: "s", description: "Seconds between the log's last append and the append of the last message this replica applied (0 when caught up).");
        Meter.CreateObservableGauge("livedlrm_fleet_connected", connected, description: "1 while the fleet log answers, 0 while examples only spool.");
    }

    public void Dispose() => Meter.Dispose();
}
