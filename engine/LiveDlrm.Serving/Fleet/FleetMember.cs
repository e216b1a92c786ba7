using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using LiveDlrm.Serving.Node;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Serving.Fleet;

/// <summary>
/// A serving node's part in the fleet (<c>livedlrm serve --fleet URL --replica-id ID</c>): every example the node
/// joins goes to the log through an <see cref="ExamplePublisher"/> (bounded spool, never blocking the request path),
/// and a <see cref="ReplicaRunner"/> applies the whole log, in log order, to the very model the node serves — the
/// node's only trainer — so every serving node holds the adapters of the same log prefix. The replica checkpoints to
/// the node's adapter directory (with the applied sequence) and reports to the status board; a restart replays the
/// log from the checkpoint. The log's end is polled once a second for the consumer-lag gauges.
/// </summary>
internal sealed class FleetMember : IAsyncDisposable
{
    readonly ServeOptions _options;
    readonly ILogger _logger;
    readonly ReconnectingLog _log;
    readonly ExamplePublisher _publisher;
    readonly FleetReplica _replica;
    readonly ReplicaRunner _runner;
    readonly FleetMetrics _metrics;
    readonly CancellationTokenSource _stop = new();
    readonly Task _poll;
    readonly ConcurrentDictionary<string, long> _quietUntil = new();
    long _logLast, _logLastAppendedTicks;

    public FleetReplica Replica => _replica;
    public ReplicaRunner Runner => _runner;
    public ExamplePublisher Publisher => _publisher;
    public FleetMetrics Metrics => _metrics;
    public bool Connected => _log.Connected;
    public string ReplicaId => _replica.Options.ReplicaId;
    /// <summary>Log messages after the last one the adapters reflect (as of the last poll of the log's end).</summary>
    public long LagMessages => Math.Max(0, Interlocked.Read(ref _logLast) - (long)_runner.AppliedSequence);

    FleetMember(ServeOptions options, ILogger logger, ReconnectingLog log, FleetReplica replica)
    {
        _options = options;
        _logger = logger;
        _log = log;
        _replica = replica;
        _metrics = new FleetMetrics(() => _publisher!.Waiting, () => (long)_runner!.AppliedSequence, () => _runner!.FingerprintAge,
                                    $"{FleetMetrics.MeterName}.{replica.Options.ReplicaId}");
        _metrics.ObserveLag(() => LagMessages, LagSeconds, () => _log.Connected ? 1 : 0);
        // With an adapter directory the spool is kept on disk there too: a node killed with examples spooled
        // publishes them when it starts again.
        _publisher = new ExamplePublisher(log, options.FleetSpool, () => _metrics, Line, options.FleetBatching(), spoolDir: options.Adapters);
        _runner = new ReplicaRunner(log, replica, options.FleetStream, options.Adapters, _metrics, Line)
        {
            CheckpointInterval = options.CheckpointInterval,
            ReportStatus = true,
        };
        _poll = Task.Run(PollLogEndAsync);
    }

    /// <summary>Connects to the log (an unreachable log is a <see cref="FleetUnavailableException"/> unless
    /// <see cref="ServeOptions.FleetOptional"/>: then the node serves, spools, and joins when the log answers).</summary>
    public static ReconnectingLog Connect(ServeOptions options, ILogger logger)
    {
        var streamOptions = new FleetStreamOptions { Stream = options.FleetStream, Subject = options.FleetSubject };
        try
        {
            var log = NatsExampleLog.ConnectAsync(options.Fleet!, streamOptions).GetAwaiter().GetResult();
            logger.LogInformation("fleet: connected to {Url}, stream {Stream}, subject {Subject}", options.Fleet, options.FleetStream, options.FleetSubject);
            return new ReconnectingLog(log);
        }
        catch (FleetUnavailableException e) when (options.FleetOptional)
        {
            logger.LogWarning("fleet: {Error}; --fleet-optional: serving without the log, examples spool until it answers", e.Message);
            return new ReconnectingLog(options.Fleet!, streamOptions, logger);
        }
    }

    /// <summary>Starts publishing and applying for <paramref name="node"/> (loaded from <paramref name="basePath"/>
    /// with the fleet's deterministic trainer options and not serving yet), restored from
    /// <paramref name="checkpoint"/> when there is one. <paramref name="switched"/> takes over the old node at a base
    /// marker.</summary>
    public static FleetMember Start(ServeOptions options, ILogger logger, ReconnectingLog log, LiveModelNode node, string basePath,
                                    FleetCheckpoint? checkpoint, Func<string, LiveModelNode> loadBase, Action<LiveModelNode, LiveModelNode> switched)
    {
        FleetMember? member = null;
        var replica = new FleetReplica(node, basePath, new FleetReplicaOptions { ReplicaId = options.ReplicaId!, BatchSize = options.FleetBatch }, loadBase)
        {
            BaseSwitched = (old, next) => { member!.Attach(next); switched(old, next); },
        };
        if (checkpoint is not null)
        {
            replica.Restore(checkpoint);
            logger.LogInformation("fleet: adapters restored from {File} at sequence {Sequence}; replaying the log from {Next}", checkpoint.Source, checkpoint.AppliedSequence, checkpoint.AppliedSequence + 1);
        }
        else logger.LogInformation("fleet: no fleet checkpoint{Where}; applying the whole log from the base", options.Adapters is null ? " (no --adapters)" : $" in {options.Adapters}");
        member = new FleetMember(options, logger, log, replica);
        member.Attach(node);
        member._runner.Start();   // after the wiring: the first entry may be a base marker
        return member;
    }

    /// <summary>Routes <paramref name="node"/>'s joined examples to the log (the node's trainer thread never runs).</summary>
    public void Attach(LiveModelNode node) => node.ExampleSink = (served, label) => _publisher.Enqueue(new TrainingExample(
        served.RequestId, served.Timestamp, label, node.Fingerprint, ReplicaId, served.Dense, served.Bags));

    /// <summary>Appends a base marker: every replica switches to <paramref name="checkpoint"/> after the same
    /// examples. Returns its sequence.</summary>
    public async Task<ulong> PublishBaseMarkerAsync(string fingerprint, string checkpoint, CancellationToken ct)
    {
        string id = string.Create(CultureInfo.InvariantCulture, $"{ReplicaId}-base-{fingerprint}-{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
        var ack = await _log.PublishAsync(id, LogRecord.Encode(new BaseMarker(fingerprint, checkpoint)), ct);
        return ack.Sequence;
    }

    double LagSeconds()
    {
        if (LagMessages == 0) return 0;
        return _runner.AppliedAppendedAt is { } at ? Math.Max(0, (new DateTimeOffset(Interlocked.Read(ref _logLastAppendedTicks), TimeSpan.Zero) - at).TotalSeconds) : double.NaN;
    }

    async Task PollLogEndAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                if (_log.Connected)
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    timeout.CancelAfter(TimeSpan.FromSeconds(2));
                    var state = await _log.StateAsync(timeout.Token);
                    Interlocked.Exchange(ref _logLastAppendedTicks, state.LastAppended.UtcTicks);
                    Interlocked.Exchange(ref _logLast, (long)state.LastSequence);
                }
                await Task.Delay(1000, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            catch (Exception) { try { await Task.Delay(1000, ct); } catch (OperationCanceledException) { return; } }
        }
    }

    /// <summary>The publisher's and reader's complaints while the log is away repeat every retry: one line per kind
    /// per 30 s is enough for the log file (the counters have the rest).</summary>
    void Line(string line)
    {
        string kind = line.Length > 40 ? line[..40] : line;
        long now = Stopwatch.GetTimestamp();
        if (_quietUntil.TryGetValue(kind, out long until) && now < until) return;
        _quietUntil[kind] = now + 30 * Stopwatch.Frequency;
        _logger.LogInformation("{Line}", line);
    }

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"fleet {(_log.Connected ? "connected" : "NOT CONNECTED (examples spool)")}, replica {ReplicaId} at sequence {_runner.AppliedSequence}, lag {LagMessages} message(s), spool {_publisher.Waiting}{(_runner.Failure is { } f ? $", STOPPED APPLYING: {f.Message}" : "")}");

    /// <summary>Publishes what the spool holds (up to <paramref name="flushTimeout"/>), then stops the replica after a
    /// final checkpoint and status.</summary>
    public async Task StopAsync(TimeSpan flushTimeout)
    {
        if (_stop.IsCancellationRequested) return;
        if (_log.Connected && !await _publisher.FlushAsync(flushTimeout))
            _logger.LogWarning("fleet: {Count} example(s) still spooled at shutdown are lost", _publisher.Waiting);
        _stop.Cancel();
        try { await _poll; } catch (OperationCanceledException) { }
        await _publisher.DisposeAsync();
        await _runner.DisposeAsync();
        _logger.LogInformation("fleet: replica {Replica} stopped at sequence {Sequence} ({Applied} examples applied, {Skipped} skipped, {Missing} missing)",
            ReplicaId, _replica.AppliedSequence, _replica.ExamplesApplied, _replica.Skipped, _replica.Missing);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.Zero);
        await _log.DisposeAsync();
        _metrics.Dispose();
        _stop.Dispose();
    }
}

/// <summary>
/// The fleet log for a serving node: a <see cref="NatsExampleLog"/>, or — when the log was unreachable at start and
/// the node may serve without it — a stand-in that fails every call ("not connected") while a background loop keeps
/// connecting, then passes everything on. The publisher and the reader retry failed calls anyway, so they need no
/// second code path for a log that is not there yet. (Once connected, the NATS client itself reconnects.)
/// </summary>
internal sealed class ReconnectingLog : IExampleLog
{
    readonly CancellationTokenSource _stop = new();
    readonly Task _connecting = Task.CompletedTask;
    readonly string _url = "";
    NatsExampleLog? _log;

    public ReconnectingLog(NatsExampleLog log) => _log = log;

    public ReconnectingLog(string url, FleetStreamOptions options, ILogger logger)
    {
        _url = url;
        _connecting = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    Volatile.Write(ref _log, await NatsExampleLog.ConnectAsync(url, options, _stop.Token));
                    logger.LogInformation("fleet: connected to {Url}; publishing the spool and applying the log", url);
                    return;
                }
                catch (FleetUnavailableException) { }
                catch (OperationCanceledException) { return; }
                try { await Task.Delay(2000, _stop.Token); } catch (OperationCanceledException) { return; }
            }
        });
    }

    public bool Connected => Volatile.Read(ref _log) is { } log && log.ConnectionState == NATS.Client.Core.NatsConnectionState.Open;

    NatsExampleLog Log => Volatile.Read(ref _log) ?? throw new FleetUnavailableException($"fleet log {_url}: not connected");

    public Task<PublishAck> PublishAsync(string messageId, ReadOnlyMemory<byte> payload, CancellationToken ct) => Log.PublishAsync(messageId, payload, ct);

    public async IAsyncEnumerable<LogEntry> ReadAsync(string reader, ulong fromSequence, [EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var e in Log.ReadAsync(reader, fromSequence, ct)) yield return e;
    }

    public Task<LogState> StateAsync(CancellationToken ct) => Log.StateAsync(ct);
    public Task PublishStatusAsync(FleetStatus status, CancellationToken ct) => Log.PublishStatusAsync(status, ct);
    public Task<IReadOnlyList<FleetStatus>> ReadStatusesAsync(CancellationToken ct) => Log.ReadStatusesAsync(ct);

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try { await _connecting; } catch (OperationCanceledException) { }
        if (Volatile.Read(ref _log) is { } log) await log.DisposeAsync();
        _stop.Dispose();
    }
}
