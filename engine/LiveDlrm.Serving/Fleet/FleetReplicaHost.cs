using System.Globalization;
using LiveDlrm.Checkpoints;
using LiveDlrm.Online;
using LiveDlrm.Serving.Node;

namespace LiveDlrm.Serving.Fleet;

/// <summary>Configuration of a stand-alone replica (<c>livedlrm fleet replica</c>).</summary>
internal sealed record FleetReplicaHostOptions
{
    public required string Url { get; init; }
    public required string Model { get; init; }
    public required string ReplicaId { get; init; }
    /// <summary>Where the replica's checkpoint lives (read at start, written every interval and at the end); null = none.</summary>
    public string? CheckpointDir { get; init; }
    public string Stream { get; init; } = "LIVEDLRM_EXAMPLES";
    public string Subject { get; init; } = "livedlrm.examples.default";
    public int BatchSize { get; init; } = 64;
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// A replica as a process: connects to the log (a one-line error when it cannot), loads the newest checkpoint it has
/// (its base with it) or else the base model, replays the log from the checkpoint's sequence, and keeps applying,
/// checkpointing and reporting its status until cancelled; the last checkpoint and status are written on the way out.
/// </summary>
internal static class FleetReplicaHost
{
    public static async Task RunAsync(FleetReplicaHostOptions options, Action<string> log, CancellationToken ct)
    {
        var replicaOptions = new FleetReplicaOptions { ReplicaId = options.ReplicaId, BatchSize = options.BatchSize };
        try { replicaOptions.Validate(); }
        catch (ArgumentException e) { throw new LiveDlrm.Runtime.UserInputException(e.Message); }
        var trainer = FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), options.BatchSize);
        LiveModelNode Load(string path) => LiveModelNode.Load(path, trainer, ringCapacity: 16);

        var checkpoint = options.CheckpointDir is null ? null : FleetCheckpoint.Load(options.CheckpointDir, options.Stream);
        string basePath = checkpoint?.BasePath ?? options.Model;
        if (!Directory.Exists(basePath)) throw new CheckpointException(basePath, "base model directory not found");

        await using var exampleLog = await NatsExampleLog.ConnectAsync(options.Url, new FleetStreamOptions { Stream = options.Stream, Subject = options.Subject }, ct);
        var replica = new FleetReplica(Load(basePath), basePath, replicaOptions, Load);
        try
        {
            if (checkpoint is not null)
            {
                replica.Restore(checkpoint);
                log(string.Create(CultureInfo.InvariantCulture, $"fleet: replica {options.ReplicaId} restored from {checkpoint.Source} at sequence {checkpoint.AppliedSequence} (base {replica.Node.Fingerprint})"));
            }
            else log($"fleet: replica {options.ReplicaId} starts from the base {basePath} ({replica.Node.Fingerprint}) and the whole log");
            // The instruction set matters to bit-identity across replicas (docs/fleet.md): say which this one uses.
            log($"fleet: replica {options.ReplicaId} SIMD: Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}, Vector256 {System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated}, ATEN_CPU_CAPABILITY={Environment.GetEnvironmentVariable("ATEN_CPU_CAPABILITY") ?? "(native)"}");
            using var metrics = new FleetMetrics(() => 0, () => (long)replica.AppliedSequence, () => 0, $"{FleetMetrics.MeterName}.{options.ReplicaId}");
            await using (var runner = new ReplicaRunner(exampleLog, replica, options.Stream, options.CheckpointDir, metrics, log)
                         { CheckpointInterval = options.CheckpointInterval, ReportStatus = true })
            {
                runner.Start();
                log($"fleet: replica {options.ReplicaId} reading {options.Stream} on {options.Url} from sequence {replica.LastSeen + 1}");
                try { await Task.Delay(Timeout.Infinite, ct); }
                catch (OperationCanceledException) { }
                if (runner.Failure is { } f) throw new FleetException($"replica {options.ReplicaId} stopped applying the log: {f.Message}");
            }
            log(string.Create(CultureInfo.InvariantCulture, $"fleet: replica {options.ReplicaId} stopped at sequence {replica.AppliedSequence} ({replica.ExamplesApplied} examples applied, {replica.Skipped} skipped, {replica.Missing} missing)"));
        }
        finally { replica.Dispose(); }
    }

    /// <summary>The fleet as the status board and the log show it (<c>livedlrm fleet status</c>).</summary>
    public static async Task<(string Text, bool Disagree)> StatusAsync(string url, string stream, CancellationToken ct)
    {
        // Only looked up: creating or updating it here would set its subject and limits to the defaults.
        await using var exampleLog = await NatsExampleLog.ConnectAsync(url, new FleetStreamOptions { Stream = stream }, ct, existingStream: true);
        var state = await exampleLog.StateAsync(ct);
        var view = FleetView.Of(state, await exampleLog.ReadStatusesAsync(ct));
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"log {stream}: sequences {state.FirstSequence}..{state.LastSequence}, {state.Messages} messages, {state.Bytes} bytes");
        w.WriteLine($"{"replica",-12} {"applied",10} {"lag msgs",9} {"lag s",7} {"fingerprint",-16} {"base",-16} {"lag p50/p99 s",-15} reported");
        foreach (var r in view.Replicas)
        {
            var s = r.Status;
            w.WriteLine($"{s.Replica,-12} {s.AppliedSequence,10} {r.LagMessages,9} {r.LagSeconds,7:F1} {s.Fingerprint,-16} {s.BaseFingerprint,-16} {$"{s.LagP50Seconds:F3}/{s.LagP99Seconds:F3}",-15} {s.ReportedAt:u}");
        }
        w.WriteLine(view.Agreement);
        return (w.ToString(), view.Disagree);
    }
}
