using System.Text.Json;
using System.Text.Json.Serialization;

namespace LiveDlrm.Serving.Fleet;

/// <summary>What a replica reports about itself (at each checkpoint and when it stops): its position in the log, the
/// adapter fingerprint at that position, and its replication lag so far. Two replicas at the same
/// <see cref="AppliedSequence"/> from the same base must report the same <see cref="Fingerprint"/>.</summary>
internal sealed record FleetStatus
{
    public required string Replica { get; init; }
    public required string Stream { get; init; }
    public required string BaseFingerprint { get; init; }
    public required ulong AppliedSequence { get; init; }
    /// <summary>Examples of message <see cref="AppliedSequence"/> + 1 also applied (batched messages).</summary>
    public int AppliedOffset { get; init; }
    public required ulong LastSeen { get; init; }
    /// <summary>XxHash3 of the adapter state at <see cref="AppliedSequence"/>, 16 hex digits.</summary>
    public required string Fingerprint { get; init; }
    public required long ExamplesApplied { get; init; }
    public required long Skipped { get; init; }
    public required long Missing { get; init; }
    /// <summary>When the message at <see cref="AppliedSequence"/> was appended to the log (null before the first).</summary>
    public DateTimeOffset? AppliedAppendedAt { get; init; }
    public required DateTimeOffset ReportedAt { get; init; }
    /// <summary>Seconds from append to training, median and 99th percentile over this process's life (NaN before any).</summary>
    public double LagP50Seconds { get; init; } = double.NaN;
    public double LagP99Seconds { get; init; } = double.NaN;
    public long LagSamples { get; init; }

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

/// <summary>The fleet's agreement as <c>livedlrm fleet status</c> shows it: per replica its lag behind the log, and
/// whether the replicas at the same position hold the same adapters.</summary>
internal sealed record FleetView(LogState Log, IReadOnlyList<FleetView.Row> Replicas, string Agreement)
{
    internal sealed record Row(FleetStatus Status, ulong LagMessages, double LagSeconds);

    public static FleetView Of(LogState log, IReadOnlyList<FleetStatus> statuses)
    {
        var rows = statuses.Select(s =>
        {
            ulong lagMessages = log.LastSequence > s.AppliedSequence ? log.LastSequence - s.AppliedSequence : 0;
            double lagSeconds = lagMessages == 0 || s.AppliedAppendedAt is not { } at ? 0 : Math.Max(0, (log.LastAppended - at).TotalSeconds);
            return new Row(s, lagMessages, lagSeconds);
        }).ToList();
        string agreement;
        if (rows.Count == 0) agreement = "no replica has reported";
        else
        {
            var byPosition = rows.GroupBy(r => (r.Status.AppliedSequence, r.Status.AppliedOffset, r.Status.BaseFingerprint)).ToList();
            bool conflict = byPosition.Any(g => g.Select(r => r.Status.Fingerprint).Distinct().Count() > 1);
            agreement = conflict ? "DISAGREE: replicas at the same position hold different adapters"
                      : byPosition.Count == 1 ? $"agree: {rows.Count} replica(s) at sequence {rows[0].Status.AppliedSequence} with fingerprint {rows[0].Status.Fingerprint}"
                      : "consistent so far: replicas at the same position agree; they are at different positions";
        }
        return new FleetView(log, rows, agreement);
    }

    /// <summary>True when some replicas at the same position report different fingerprints.</summary>
    public bool Disagree => Agreement.StartsWith("DISAGREE", StringComparison.Ordinal);
}
