using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using LiveDlrm.Data;
using LiveDlrm.Online.Persistence;
using LiveDlrm.Serving.Api;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;
using LiveDlrm.Serving.Qos;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace LiveDlrm.Serving;

/// <summary>
/// The composition root of a live inference node: the base model with its adapters and trainer (an
/// <see cref="ILiveNode"/> in a swappable <see cref="NodeSlot"/>), the label window, the trainer's QoS, adapter
/// persistence, metrics, and the ASP.NET Core application serving them — HTTP/1.1 on one Kestrel endpoint (JSON API,
/// /metrics, health, admin: what curl and Prometheus speak) and gRPC over cleartext HTTP/2 on another (h2c needs an
/// HTTP/2-only endpoint: without TLS there is no ALPN to negotiate it).
/// </summary>
internal sealed class ServingHost : IAsyncDisposable
{
    readonly ServeOptions _options;
    readonly ILogger _log;
    readonly NodeSlot _slot;
    readonly ServingMetrics _metrics = new();
    readonly LabelJoin _labels;
    readonly TrainerQos _qos;
    readonly PoolWaitProbe _poolWait;
    readonly GcPauseListener _gcPauses;
    // The runtime's own meter (GC collections and allocated bytes, thread-pool queue, lock contention): what a
    // request-latency tail is made of besides the handler, on /metrics as dotnet_*.
    const string RuntimeMeterName = "System.Runtime";
    readonly AdapterStore? _store;
    readonly FleetMember? _fleet;   // with --fleet: examples go to the log, the log is the only trainer
    readonly object _preparedLock = new();
    (string Path, LiveModelNode Node)? _prepared;   // a base loaded by a fleet reload, taken when its marker comes back
    readonly SemaphoreSlim _stateLock = new(1, 1);   // saves, reloads, trainer mode changes and shutdown, one at a time
    readonly string? _adminToken;
    readonly Timer? _checkpointTimer;
    AdapterStore.MergedRows _merged = new();
    RequestDecoder _decoder;
    int _inFlight, _draining, _finished;
    long _lastCheckpointTicks;
    long _droppedBefore;   // labels dropped by nodes replaced on reload, so the counter stays monotonic
    PosixSignalRegistration? _sighup;

    public WebApplication App { get; }
    internal ILiveNode Node => _slot.Current;
    internal TrainerQos Qos => _qos;
    public bool Draining => Volatile.Read(ref _draining) != 0;
    internal string ModelPath => _options.Model;
    internal long MaxRequestBytes => _options.MaxRequestBytes;

    ServingHost(ServeOptions options, ILogger log, Action<IWebHostBuilder>? configureWebHost)
    {
        _options = options;
        _log = log;
        _adminToken = ReadToken(options.AdminTokenFile, log);
        _store = options.Adapters is null || options.Fleet is not null ? null : new AdapterStore(options.Adapters, DiscardHint);

        var sw = Stopwatch.StartNew();
        // A fleet node connects first (an unreachable log fails in a moment, before a large model is loaded) and
        // starts from its fleet checkpoint's base, which a base marker may have moved away from --model.
        var fleetLog = options.Fleet is null ? null : FleetMember.Connect(options, log);
        FleetCheckpoint? fleetCheckpoint = null;
        LiveModelNode node;
        try
        {
            if (fleetLog is not null && options.Adapters is not null && !options.AdaptersReset) fleetCheckpoint = FleetCheckpoint.Load(options.Adapters, options.FleetStream);
            node = LiveModelNode.Load(fleetCheckpoint?.BasePath ?? options.Model, options.TrainerOptions(), options.RingCapacity);
        }
        catch { fleetLog?.DisposeAsync().AsTask().GetAwaiter().GetResult(); throw; }
        try { if (fleetLog is null) RestoreAdapters(node); }
        catch { node.Dispose(); throw; }
        _log.LogInformation("model: {Model} (base {Fingerprint}), {Tables} tables, {MiB} MiB, loaded in {Seconds} s; adapters on {Adapted} table(s)",
            options.Model, node.Fingerprint, node.Model.Tables.Count, node.Model.TableBytes >> 20, F($"{sw.Elapsed.TotalSeconds:F1}"), node.Adapters.Count(a => a is not null));
        _slot = new NodeSlot(node);
        if (fleetLog is not null)
        {
            try { _fleet = FleetMember.Start(options, log, fleetLog, node, fleetCheckpoint?.BasePath ?? options.Model, fleetCheckpoint, LoadBase, FleetBaseSwitched); }
            catch { node.Dispose(); fleetLog.DisposeAsync().AsTask().GetAwaiter().GetResult(); throw; }
        }
        _decoder = new RequestDecoder(node.Layout, options.MaxBatchEvents, options.MaxBagIds);
        _labels = new LabelJoin(() => _slot.Current, options.Labels, options.LabelWindow, options.RingCapacity, _metrics);
        _qos = new TrainerQos(options.Qos, options.QosTargetMs, log, priority: options.QosTrainerPriority);
        if (options.Trainer && _fleet is null) _qos.Attach(node);
        else if (_fleet is not null) _qos.AttachFleetReplica(_fleet.Runner.Throttle, _fleet.Runner.OnApplyingThread);
        _lastCheckpointTicks = Stopwatch.GetTimestamp();
        RegisterObservables();
        App = BuildApp(configureWebHost);
        _poolWait = new PoolWaitProbe();
        _gcPauses = new GcPauseListener(_metrics.GcPauseSeconds);
        if (_store is not null)
            _checkpointTimer = new Timer(_ => SaveAdapters("interval"), null, options.CheckpointInterval, options.CheckpointInterval);
    }

    /// <summary>Loads the model, restores adapters, starts the trainer and builds the application (not yet
    /// listening: <see cref="WebApplication.StartAsync"/> or <see cref="RunAsync"/>). <paramref name="configureWebHost"/>
    /// lets tests put a TestServer in place of Kestrel.</summary>
    public static ServingHost Create(ServeOptions options, ILogger log, Action<IWebHostBuilder>? configureWebHost = null)
    {
        options.Validate();
        return new ServingHost(options, log, configureWebHost);
    }

    static string? ReadToken(string? file, ILogger log)
    {
        if (file is null) { log.LogInformation("admin: no --admin-token-file, admin endpoints disabled"); return null; }
        if (!File.Exists(file)) { log.LogWarning("admin: {File} does not exist, admin endpoints disabled", file); return null; }
        string token = File.ReadAllText(file).Trim();
        if (token.Length < 16) throw new ArgumentException($"--admin-token-file: the token in '{file}' is shorter than 16 characters");
        return token;
    }

    const string DiscardHint = "restart with --adapters-reset to start from fresh adapters";

    void RestoreAdapters(ILiveNode node)
    {
        var merged = AdapterStore.MergedRows.Track(node.Live);
        _merged = merged;
        if (_store is null) return;
        if (_options.AdaptersReset) { _log.LogInformation("adapters: --adapters-reset, starting from fresh adapters ({File} is replaced at the next save)", _store.FilePath); return; }
        var export = _store.ReadVerified();
        if (export is null) { _log.LogInformation("adapters: no {File} yet, starting from fresh adapters", _store.FilePath); return; }
        AdapterStore.Restore(node.Live, node.Fingerprint, merged, export, _store.FilePath, DiscardHint);
        _log.LogInformation("adapters: restored from {File} ({Bytes} bytes, state {State})", _store.FilePath, export.Length, F($"{AdapterStore.Fingerprint(export):x16}"));
    }

    // ------------------------------------------------------------------ application

    WebApplication BuildApp(Action<IWebHostBuilder>? configureWebHost)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = _options.ShutdownTimeout);
        builder.Services.AddSingleton(this);
        // /metrics: the OpenTelemetry Prometheus exporter over this server's meter (counter → _total, unit suffixes).
        builder.Services.AddOpenTelemetry().WithMetrics(m => m
            .AddMeter([_metrics.Meter.Name, RuntimeMeterName, .. _slot.Current.MeterNames, .. (_fleet is null ? [] : new[] { _fleet.Metrics.Meter.Name })])
            .AddView(ServingMetrics.RequestSecondsName, new ExplicitBucketHistogramConfiguration { Boundaries = ServingMetrics.LatencyBuckets })
            .AddView(ServingMetrics.QosLatencySecondsName, new ExplicitBucketHistogramConfiguration { Boundaries = ServingMetrics.LatencyBuckets })
            .AddView(ServingMetrics.GcPauseSecondsName, new ExplicitBucketHistogramConfiguration { Boundaries = ServingMetrics.LatencyBuckets })
            .AddPrometheusExporter(p => p.ScrapeResponseCacheDurationMilliseconds = 0));
        builder.Services.AddGrpc(g =>
        {
            g.MaxReceiveMessageSize = (int)Math.Min(int.MaxValue, _options.MaxRequestBytes);
            g.EnableDetailedErrors = true;
        });
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = _options.MaxRequestBytes;
            k.Listen(_options.HttpEndPoint(), l => l.Protocols = HttpProtocols.Http1);
            k.Listen(_options.GrpcEndPoint(), l => l.Protocols = HttpProtocols.Http2);
        });
        configureWebHost?.Invoke(builder.WebHost);
        var app = builder.Build();
        app.Lifetime.ApplicationStopping.Register(Drain);
        app.MapPrometheusScrapingEndpoint("/metrics");
        JsonApi.Map(app, this);
        app.MapGrpcService<GrpcApi>();
        return app;
    }

    /// <summary>Runs until SIGTERM/SIGINT (graceful drain, adapters saved) or <paramref name="token"/>.</summary>
    public async Task RunAsync(CancellationToken token = default)
    {
        _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, ctx =>
        {
            ctx.Cancel = true;
            _log.LogInformation("SIGHUP: reloading the base model from {Model}", _options.Model);
            _ = Task.Run(() => ReloadAsync(_options.Model));
        });
        await App.StartAsync(token);
        _log.LogInformation("serving: HTTP/1.1 {Http} (JSON, /metrics, /healthz, /readyz, /admin), gRPC h2c {Grpc}", _options.HttpEndPoint(), _options.GrpcEndPoint());
        await App.WaitForShutdownAsync(token);
        await FinishAsync();
    }

    // ------------------------------------------------------------------ request path

    /// <summary>Counts a request in flight unless the node is draining (then the caller answers 503/UNAVAILABLE).</summary>
    internal bool Enter()
    {
        Interlocked.Increment(ref _inFlight);
        if (!Draining) return true;
        Interlocked.Decrement(ref _inFlight);
        return false;
    }

    internal void Exit() => Interlocked.Decrement(ref _inFlight);

    internal RequestDecoder Decoder => Volatile.Read(ref _decoder);

    internal readonly record struct Scored(float[] Scores, long[] RequestIds, string Model);

    /// <summary>Scores a validated batch on one node from start to end and opens its label window.</summary>
    internal Scored Score(EventBatch batch)
    {
        using var lease = _slot.Acquire();
        if (!ReferenceEquals(batch.Layout, lease.Node.Layout) && !SameLayout(batch.Layout, lease.Node.Layout))
            throw new BadRequestException("events: decoded for a model that was replaced meanwhile; retry");
        var scores = new float[batch.Count];
        lease.Node.Serve(batch, scores);
        _labels.Served(batch.RequestIds);
        _metrics.Events.Add(batch.Count);
        return new Scored(scores, batch.RequestIds.ToArray(), lease.Node.Fingerprint);
    }

    static bool SameLayout(EventBatchLayout a, EventBatchLayout b) =>
        a.DenseCount == b.DenseCount && a.SparseCount == b.SparseCount && a.Sparse.Zip(b.Sparse).All(p => p.First.Rows == p.Second.Rows);

    internal FeedbackResult Feedback(long requestId, float label) => _labels.Feedback(requestId, label);

    internal void Completed(string api, long startTicks, string? errorKind)
    {
        long ticks = Stopwatch.GetTimestamp() - startTicks;
        var apiTag = new KeyValuePair<string, object?>("api", api);
        _metrics.Requests.Add(1, apiTag, new KeyValuePair<string, object?>("outcome", errorKind is null ? "ok" : "error"));
        if (errorKind is not null) { CountError(errorKind); return; }
        _metrics.RequestSeconds.Record((double)ticks / Stopwatch.Frequency, apiTag);
        // The controller defends handler time plus the pool's current queueing delay: the wait a request had before
        // its handler ran is invisible to the handler, and under load it is most of the tail.
        long observed = ticks + _poolWait.RecentWaitTicks;
        _metrics.QosLatencySeconds.Record((double)observed / Stopwatch.Frequency, apiTag);
        _qos.Record(observed);
    }

    internal void CountError(string kind) => _metrics.Errors.Add(1, new KeyValuePair<string, object?>("kind", kind));

    internal bool Ready => !Draining && (!_qos.TrainerWanted || _slot.Current.TrainerRunning || _qos.PausedForRead);

    /// <summary>What /readyz says when ready: a fleet node adds its log connection (serving goes on without it).</summary>
    internal string ReadyText => _fleet is null ? "ready\n" : $"ready; {_fleet.Describe()}\n";

    internal bool FleetMode => _fleet is not null;
    internal FleetMember? Fleet => _fleet;

    // ------------------------------------------------------------------ admin

    internal bool AdminEnabled => _adminToken is not null;

    internal bool Authorized(string? header)
    {
        if (_adminToken is null || header is null || !header.StartsWith("Bearer ", StringComparison.Ordinal)) return false;
        var given = System.Text.Encoding.UTF8.GetBytes(header[7..].Trim());
        var expected = System.Text.Encoding.UTF8.GetBytes(_adminToken);
        return System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, expected);
    }

    /// <summary>Loads <paramref name="checkpoint"/> beside the serving model, then switches: requests in flight
    /// finish on the old model, new ones start on the new one; the old one is freed when its last request ends.
    /// Policy: the new base starts with fresh adapters (the old ones were learned against the old base) and they
    /// are saved for the new base at once; labels still pending for the old model are not trained.</summary>
    public async Task<(bool Ok, string Message)> ReloadAsync(string checkpoint)
    {
        if (_fleet is not null) return await FleetReloadAsync(checkpoint);
        var sw = Stopwatch.StartNew();
        ILiveNode next;
        try
        {
            next = await Task.Run(() => LiveModelNode.Load(checkpoint, _options.TrainerOptions(), _options.RingCapacity));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            string m = $"reload of {checkpoint} failed, still serving {_slot.Current.Fingerprint}: {e.Message}";
            _log.LogError("{Message}", m);
            return (false, m);
        }
        if (!SameLayout(next.Layout, _slot.Current.Layout))
        {
            next.Dispose();
            _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            return (false, $"reload of {checkpoint} refused: its dense count or tables differ from the serving model's, clients would break");
        }
        ILiveNode old;
        await _stateLock.WaitAsync();
        try
        {
            var merged = AdapterStore.MergedRows.Track(next.Live);
            bool trainer = _qos.TrainerWanted;
            _qos.Detach();
            Volatile.Write(ref _decoder, new RequestDecoder(next.Layout, _options.MaxBatchEvents, _options.MaxBagIds));
            var swap = _slot.SwapAsync(next);
            _merged = merged;
            if (trainer) _qos.Attach(next);
            old = await swap;
            if (_store is not null) SaveLocked("reload");
        }
        finally { _stateLock.Release(); }
        Interlocked.Add(ref _droppedBefore, old.DroppedWhileStopped);
        old.Dispose();
        _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "ok"));
        string msg = F($"reloaded: now serving {next.Fingerprint} from {checkpoint} (loaded and switched in {sw.Elapsed.TotalSeconds:F1} s; adapters reset)");
        _log.LogInformation("{Message}", msg);
        return (true, msg);
    }

    /// <summary>Reload in a fleet: the new base is loaded and checked here (a bad one never reaches the log), then a
    /// base marker naming it goes into the log, and every node — this one included — switches when its replica
    /// applies the marker: after the same examples, with fresh adapters. The checkpoint path must be the same on
    /// every node. Waits up to a minute for this node's switch.</summary>
    async Task<(bool Ok, string Message)> FleetReloadAsync(string checkpoint)
    {
        string full = Path.GetFullPath(checkpoint);
        LiveModelNode next;
        try { next = await Task.Run(() => LiveModelNode.Load(full, _options.TrainerOptions(), _options.RingCapacity)); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            return (false, $"reload of {checkpoint} failed, no base marker published, still serving {_slot.Current.Fingerprint}: {e.Message}");
        }
        if (!SameLayout(next.Layout, _slot.Current.Layout))
        {
            next.Dispose();
            _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            return (false, $"reload of {checkpoint} refused: its dense count or tables differ from the serving model's, clients would break");
        }
        string fingerprint = next.Fingerprint;
        lock (_preparedLock) { _prepared?.Node.Dispose(); _prepared = (full, next); }
        ulong sequence;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            sequence = await _fleet!.PublishBaseMarkerAsync(fingerprint, full, timeout.Token);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            lock (_preparedLock) { if (ReferenceEquals(_prepared?.Node, next)) { _prepared = null; next.Dispose(); } }
            _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            return (false, $"reload of {checkpoint}: the base marker could not be published ({e.Message.Split('\n')[0]}), still serving {_slot.Current.Fingerprint}");
        }
        _log.LogInformation("fleet: base marker for {Fingerprint} ({Checkpoint}) at sequence {Sequence}", fingerprint, full, sequence);
        var sw = Stopwatch.StartNew();
        while (_fleet.Runner.AppliedSequence < sequence && sw.Elapsed < TimeSpan.FromMinutes(1) && _fleet.Runner.Failure is null) await Task.Delay(20);
        bool switched = _fleet.Runner.AppliedSequence >= sequence;
        return (true, F($"base marker for {fingerprint} from {full} published at sequence {sequence}; every fleet node switches there with fresh adapters; ") +
                      (switched ? $"this node now serves {_slot.Current.Fingerprint}" : "this node has not applied it yet"));
    }

    /// <summary>The replica's loader at a base marker: the node this host prepared for it, or a fresh load (the
    /// marker came from another node). Either way a base straight from its checkpoint, as on every node.</summary>
    LiveModelNode LoadBase(string path)
    {
        lock (_preparedLock)
        {
            if (_prepared is { } p && p.Path == Path.GetFullPath(path)) { _prepared = null; return p.Node; }
        }
        return LiveModelNode.Load(path, _options.TrainerOptions(), _options.RingCapacity);
    }

    /// <summary>On the replica's thread, at a base marker: the new node serves from now on; the old one is freed when
    /// its last request ends.</summary>
    void FleetBaseSwitched(LiveModelNode old, LiveModelNode next)
    {
        Volatile.Write(ref _decoder, new RequestDecoder(next.Layout, _options.MaxBatchEvents, _options.MaxBagIds));
        var swap = _slot.SwapAsync(next);
        _ = swap.ContinueWith(t =>
        {
            Interlocked.Add(ref _droppedBefore, t.Result.DroppedWhileStopped);
            t.Result.Dispose();
        }, TaskScheduler.Default);
        _metrics.Reloads.Add(1, new KeyValuePair<string, object?>("result", "ok"));
        _log.LogInformation("fleet: base marker applied at sequence {Sequence}: now serving {Fingerprint} (adapters fresh)", _fleet?.Replica.LastSeen, next.Fingerprint);
    }

    /// <summary>Starts or stops the trainer and sets its QoS mode (benchmarks alternate modes in one process).</summary>
    internal async Task SetTrainerAsync(bool running, QosMode mode, double? targetMs = null, TrainerPriority? priority = null)
    {
        await _stateLock.WaitAsync();
        try
        {
            _qos.Set(_slot.Current, mode, running, targetMs, priority);
            _log.LogInformation("trainer: {State}, qos {Mode}, target {Target} ms, unpinned trainer priority {Priority}", running ? "running" : "stopped", mode.ToString().ToLowerInvariant(),
                _qos.TargetMs.ToString("G4", CultureInfo.InvariantCulture), _qos.Priority.ToString().ToLowerInvariant());
        }
        finally { _stateLock.Release(); }
    }

    internal string TrainerDescription()
    {
        if (_fleet is not null) return _fleet.Describe();
        var s = _slot.Current.Status;
        return F($"running {_slot.Current.TrainerRunning}, qos {_qos.Mode.ToString().ToLowerInvariant()} ({_qos.Priority.ToString().ToLowerInvariant()}) target {_qos.TargetMs:G4} ms, samples {s.Samples}, duty {_qos.DutyCycle:F2}; {_qos.Summary()}");
    }

    /// <summary>Saves the adapters now; returns the state fingerprint written, or null when it failed or is disabled.</summary>
    public ulong? SaveAdapters(string why)
    {
        if (_store is null || Volatile.Read(ref _finished) != 0) return null;
        _stateLock.Wait();
        try { return SaveLocked(why); }
        finally { _stateLock.Release(); }
    }

    ulong? SaveLocked(string why)
    {
        if (_store is null) return null;
        var node = _slot.Current;
        var merged = _merged;
        byte[] export = _qos.WithTrainerPaused(() => AdapterStore.Export(node.Live, node.Fingerprint, merged));
        try
        {
            _store.Save(export);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _metrics.Checkpoints.Add(1, new KeyValuePair<string, object?>("result", "failed"));
            _log.LogError("adapters: {Why} checkpoint to {File} FAILED: {Error}", why, _store.FilePath, e.Message);
            return null;
        }
        Interlocked.Exchange(ref _lastCheckpointTicks, Stopwatch.GetTimestamp());
        _metrics.Checkpoints.Add(1, new KeyValuePair<string, object?>("result", "saved"));
        return AdapterStore.Fingerprint(export);
    }

    /// <summary>Fingerprint of the live adapter state as a save would write it (trainer quiesced while read).</summary>
    internal ulong AdapterFingerprint()
    {
        // A fleet node's adapters have one writer, the replica's thread: it computes the fingerprint between entries.
        if (_fleet is not null) return _fleet.Runner.FingerprintAsync().WaitAsync(TimeSpan.FromSeconds(30)).GetAwaiter().GetResult().Fingerprint;
        _stateLock.Wait();
        try
        {
            var node = _slot.Current;
            var merged = _merged;
            return _qos.WithTrainerPaused(() => AdapterStore.Fingerprint(AdapterStore.Export(node.Live, node.Fingerprint, merged)));
        }
        finally { _stateLock.Release(); }
    }

    // ------------------------------------------------------------------ lifecycle

    /// <summary>ApplicationStopping: refuse new requests, wait for those in flight (up to the shutdown timeout).</summary>
    void Drain()
    {
        if (Interlocked.Exchange(ref _draining, 1) != 0) return;
        var sw = Stopwatch.StartNew();
        while (Volatile.Read(ref _inFlight) > 0 && sw.Elapsed < _options.ShutdownTimeout) Thread.Sleep(1);
        _log.LogInformation("drain: {InFlight} request(s) still in flight after {Ms} ms", Volatile.Read(ref _inFlight), F($"{sw.Elapsed.TotalMilliseconds:F0}"));
    }

    /// <summary>After the application stopped: the trainer stops at a step boundary, the adapters are saved.</summary>
    public async Task FinishAsync()
    {
        Drain();
        await _stateLock.WaitAsync();
        try
        {
            if (Volatile.Read(ref _finished) != 0) return;
            _checkpointTimer?.Dispose();
            _qos.Detach();
            if (_fleet is not null) await _fleet.StopAsync(_options.ShutdownTimeout);
            if (_store is not null)
            {
                ulong? saved = SaveLocked("shutdown");
                if (saved is ulong f) _log.LogInformation("adapters: saved to {File} on shutdown (state {State})", _store.FilePath, F($"{f:x16}"));
                else _log.LogError("adapters: NOT saved on shutdown");
            }
            Volatile.Write(ref _finished, 1);
        }
        finally { _stateLock.Release(); }
    }

    public async ValueTask DisposeAsync()
    {
        await FinishAsync();
        _sighup?.Dispose();
        await App.DisposeAsync();
        _labels.Dispose();
        _qos.Dispose();
        if (_fleet is not null) await _fleet.DisposeAsync();
        lock (_preparedLock) { _prepared?.Node.Dispose(); _prepared = null; }
        _poolWait.Dispose();
        _gcPauses.Dispose();
        _metrics.Dispose();
        _slot.Current.Dispose();
        _stateLock.Dispose();
    }

    // ------------------------------------------------------------------ metrics

    void RegisterObservables()
    {
        var m = _metrics.Meter;
        m.CreateObservableCounter("livedlrm_feedback_dropped_trainer_stopped", () => Interlocked.Read(ref _droppedBefore) + _slot.Current.DroppedWhileStopped,
            description: "Joined labels not trained because the trainer was stopped.");
        m.CreateObservableGauge("livedlrm_trainer_running", () => _slot.Current.TrainerRunning ? 1 : 0, description: "1 while the trainer thread runs.");
        m.CreateObservableGauge("livedlrm_adapter_memory_ratio", () => PerTable(a => a.MemoryFraction), description: "Adapter bytes / base table bytes, per table.");
        m.CreateObservableGauge("livedlrm_adapter_rows", () => PerTable(a => a.ActiveRows), description: "Rows holding an adapter update per table.");
        m.CreateObservableGauge("livedlrm_qos_duty_cycle_ratio", () => _qos.DutyCycle, description: "Trainer duty cycle set by the QoS controller (0 = paused).");
        m.CreateObservableCounter("livedlrm_qos_decisions", () => _qos.Decisions(), description: "QoS controller decisions by action.");
        m.CreateObservableGauge("livedlrm_adapter_checkpoint_age_seconds",
            () => _store is null ? double.NaN : Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastCheckpointTicks)).TotalSeconds, unit: "s",
            description: "Seconds since the adapters were last saved (NaN without --adapters).");
    }

    IEnumerable<Measurement<double>> PerTable(Func<LiveDlrm.Lora.TableAdapter, double> value)
    {
        var node = _slot.Current;
        for (int t = 0; t < node.Adapters.Count; t++)
            if (node.Adapters[t] is { } a)
                yield return new(value(a), new KeyValuePair<string, object?>("table", node.Model.Tables[t].Name));
    }

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
}
