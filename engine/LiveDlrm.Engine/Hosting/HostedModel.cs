using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.IO.Hashing;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Online.Persistence;
using LiveDlrm.Runtime;

namespace LiveDlrm.Hosting;

/// <summary>
/// A DLRM served inside the host's process with LoRA adapters trained, in the same process, on the labels the host
/// feeds back: the engine's entry point for an embedding application.
/// <list type="bullet">
/// <item><see cref="Load"/> a base model (a LiveDlrm checkpoint directory or a PyTorch DLRM <c>state_dict</c> file),
/// <see cref="Score(EventBatch, Span{float})"/> requests, <see cref="Feedback"/> their labels when they arrive.</item>
/// <item><see cref="StartTrainer"/> runs the colocated trainer thread under <see cref="TrainerQosOptions"/>;
/// scores reflect its adapter updates as they are published.</item>
/// <item><see cref="SaveAdapters"/> / <see cref="RestoreAdapters"/> keep what was learned across restarts;
/// <see cref="ReloadBase"/> swaps in a newer base model (fresh adapters).</item>
/// <item>Counters: <see cref="Status"/>, and the <see cref="System.Diagnostics.Metrics.Meter"/>s named by
/// <see cref="MeterNames"/> for an exporter (OpenTelemetry <c>AddMeter</c>, <c>dotnet-counters</c>).</item>
/// </list>
/// <para>Thread safety: <see cref="Score(EventBatch, Span{float})"/>, the span overload, <see cref="Feedback"/>,
/// <see cref="RecordRequestLatency"/> and <see cref="Status"/> may be called from any number of threads at once.
/// The lifecycle calls (<see cref="StartTrainer"/>, <see cref="StopTrainer"/>, <see cref="SaveAdapters"/>,
/// <see cref="RestoreAdapters"/>, <see cref="ReloadBase"/>, <see cref="Dispose"/>) are serialised among themselves;
/// <see cref="RestoreAdapters"/>, <see cref="ReloadBase"/> and <see cref="Dispose"/> wait for scoring calls in
/// progress and hold new ones back for the moment they change the model.</para>
/// <para>Ownership: the host owns the <see cref="HostedModel"/> and must <see cref="Dispose"/> it (it stops the
/// trainer and frees the native-memory tables). Batches and spans passed in stay the caller's; nothing is kept
/// from them but the served events remembered for their labels.</para>
/// </summary>
public sealed class HostedModel : IDisposable
{
    /// <summary>The meter of the hosted model itself (<c>livedlrm.hosted.scored</c>, <c>livedlrm.hosted.trainer.duty_cycle</c>).</summary>
    public const string MeterName = "LiveDlrm.Hosting";

    /// <summary>Every meter a hosted model publishes through: its own, the trainer's, the served-request memory's and
    /// the adapters' (memory, budget and rank per table).</summary>
    public static IReadOnlyList<string> MeterNames { get; } =
        [MeterName, TrainerStats.MeterName, ServedRequestRing.MeterName, LiveModel.AdapterMeterName];

    readonly HostedModelOptions _options;
    readonly ReaderWriterLockSlim _swap = new(LockRecursionPolicy.NoRecursion);
    readonly object _lifecycle = new();
    readonly Meter _meter;
    Loaded _loaded;
    HostedTrainerQos? _qos;
    TrainerQosOptions? _lastQos;
    long _scored;
    bool _disposed;

    [ThreadStatic] static int t_torchThreads;
    [ThreadStatic] static EventBatch? t_spanBatch;

    HostedModel(Loaded loaded, HostedModelOptions options)
    {
        _loaded = loaded;
        _options = options;
        _meter = new Meter(MeterName);
        _meter.CreateObservableCounter("livedlrm.hosted.scored", () => Interlocked.Read(ref _scored), "{event}", "Events scored since the base model was loaded");
        _meter.CreateObservableGauge("livedlrm.hosted.trainer.duty_cycle", () => DutyCycle(), "1", "Share of time the QoS controller lets the trainer compute");
    }

    /// <summary>Loads the base model at <paramref name="path"/>: a LiveDlrm checkpoint directory (as written by
    /// <c>livedlrm train</c> or <see cref="WriteInitialCheckpoint"/>) or a PyTorch DLRM <c>state_dict</c> file (tables
    /// named <c>emb_0</c>, <c>emb_1</c>, …). The trainer is not started. A file that cannot be used throws
    /// <see cref="HostedModelException"/>; bad <paramref name="options"/> throw <see cref="ArgumentException"/>.</summary>
    public static HostedModel Load(string path, HostedModelOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new HostedModelOptions();
        options.Validate();
        return new HostedModel(Loaded.From(path, options), options);
    }

    /// <summary>Writes a freshly initialised base model of <paramref name="shape"/> (deterministic by
    /// <paramref name="seed"/>) as a LiveDlrm checkpoint to <paramref name="directory"/>, which must not exist or be
    /// empty (or hold a checkpoint, which is replaced). For trying the API, or starting a model that learns only online.</summary>
    public static void WriteInitialCheckpoint(string directory, ModelShape shape, int seed)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(shape.Tables);
        DlrmConfig config;
        try
        {
            config = new DlrmConfig(shape.DenseFeatures, shape.BottomMlp, shape.TopMlp,
                shape.Tables.Select(t => new DlrmTableConfig(t.Name, t.Rows, shape.EmbeddingDim, PoolingMode.Sum, EmbeddingStorage.Fp32)).ToList());
            config.CheckMemory();
        }
        catch (Exception e) when (e is DlrmConfigException or UserInputException) { throw new ArgumentException($"model shape: {e.Message}", nameof(shape), e); }
        TorchRuntime.EnsureInitialised();
        using var model = DlrmModel.Create(config, seed, ModelCopy.InlineCpuBackend());
        try { Checkpoint.Save(model, directory); }
        catch (Exception e) when (e is CheckpointException or UserInputException) { throw new HostedModelException(e.Message, e); }
    }

    /// <summary>What a batch for this model carries: dense feature count, and per embedding table (model order) its
    /// sparse feature and row count. Changes only with <see cref="ReloadBase"/>.</summary>
    public EventBatchLayout Layout => Volatile.Read(ref _loaded).Layout;

    /// <summary>Identifies the loaded base model's content: the checkpoint's manifest checksum, or the XxHash3 of the
    /// PyTorch file. Saved adapters restore only onto the base they were trained on.</summary>
    public string BaseFingerprint => Volatile.Read(ref _loaded).Fingerprint;

    /// <summary>An empty batch of this model's <see cref="Layout"/> holding up to <paramref name="capacity"/> events;
    /// the caller owns it (reuse it: a batch's arrays are allocated once).</summary>
    public EventBatch CreateBatch(int capacity) => new(Layout, capacity);

    /// <summary>Scores every event of <paramref name="batch"/> (click probabilities) into <paramref name="scores"/> and
    /// remembers it by its request id (<see cref="EventBatch.RequestIds"/>) for <see cref="Feedback"/>. The batch's
    /// layout must match <see cref="Layout"/>.</summary>
    public void Score(EventBatch batch, Span<float> scores)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (scores.Length < batch.Count) throw new ArgumentException($"scores holds {scores.Length}, the batch has {batch.Count} events", nameof(scores));
        _swap.EnterReadLock();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ServeLocked(batch, scores);
        }
        finally { _swap.ExitReadLock(); }
    }

    /// <summary>Scores <c>requestIds.Length</c> events given as spans: <paramref name="dense"/> holds each event's
    /// dense features in turn (<see cref="EventBatchLayout.DenseCount"/> each), <paramref name="sparse"/> each event's
    /// one row index per sparse feature in turn (<see cref="EventBatchLayout.SparseCount"/> each, in [0, rows));
    /// requests are remembered by <paramref name="requestIds"/> for <see cref="Feedback"/>. Uses a batch kept per
    /// calling thread.</summary>
    public void Score(ReadOnlySpan<long> requestIds, ReadOnlySpan<float> dense, ReadOnlySpan<long> sparse, Span<float> scores)
    {
        int n = requestIds.Length;
        if (scores.Length < n) throw new ArgumentException($"scores holds {scores.Length}, there are {n} requests", nameof(scores));
        _swap.EnterReadLock();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var layout = _loaded.Layout;
            int d = layout.DenseCount, s = layout.SparseCount;
            if (dense.Length != (long)n * d) throw new ArgumentException($"dense holds {dense.Length} values, {n} requests × {d} dense features need {(long)n * d}", nameof(dense));
            if (sparse.Length != (long)n * s) throw new ArgumentException($"sparse holds {sparse.Length} indices, {n} requests × {s} sparse features need {(long)n * s}", nameof(sparse));
            var batch = t_spanBatch;
            if (batch is null || batch.Layout != layout || batch.Capacity < n)
                t_spanBatch = batch = new EventBatch(layout, Math.Max(n, batch?.Layout == layout ? batch.Capacity * 2 : 64));
            batch.Clear();
            for (int i = 0; i < n; i++)
            {
                int row = batch.AddEvent(0f, 0, requestIds[i]);
                dense.Slice(i * d, d).CopyTo(batch.DenseRowForWrite(row));
                for (int f = 0; f < s; f++)
                {
                    long index = sparse[i * s + f];
                    if ((ulong)index >= (ulong)layout.Sparse[f].Rows)
                    {
                        batch.Clear();
                        throw new ArgumentOutOfRangeException(nameof(sparse), index, $"request {i}: '{layout.Sparse[f].Name}' index {index} is outside [0, {layout.Sparse[f].Rows})");
                    }
                    batch.AddIndex(f, index);
                }
            }
            ServeLocked(batch, scores);
            batch.Clear();
        }
        finally { _swap.ExitReadLock(); }
    }

    void ServeLocked(EventBatch batch, Span<float> scores)
    {
        // libtorch's intra-op pool is per calling thread; a host scores on many threads and must not fan each out.
        if (t_torchThreads != _options.TorchThreadsPerScoringThread)
        {
            TorchSharp.torch.set_num_threads(_options.TorchThreadsPerScoringThread);
            t_torchThreads = _options.TorchThreadsPerScoringThread;
        }
        long start = Stopwatch.GetTimestamp();
        _loaded.Live.Serve(batch, scores);
        Volatile.Read(ref _qos)?.Record(Stopwatch.GetTimestamp() - start);
        Interlocked.Add(ref _scored, batch.Count);
    }

    /// <summary>A request's end-to-end latency as the host measured it, for the trainer's QoS controller (in addition
    /// to the scoring latency it measures itself). Ignored when no controller runs.</summary>
    public void RecordRequestLatency(TimeSpan latency) => Volatile.Read(ref _qos)?.Record((long)(latency.TotalSeconds * Stopwatch.Frequency));

    /// <summary>The label (0 or 1) of a scored request arrived: it is joined to the remembered request and queued for
    /// the trainer (queued labels wait while the trainer is stopped, the oldest dropped beyond the queue's capacity).
    /// False if the request is unknown, expired from memory, already labelled, or was scored by a base model since
    /// replaced. A label other than 0 or 1 throws <see cref="ArgumentOutOfRangeException"/>.</summary>
    public bool Feedback(long requestId, float label)
    {
        _swap.EnterReadLock();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _loaded.Live.Feedback(requestId, label);
        }
        finally { _swap.ExitReadLock(); }
    }

    /// <summary>Starts the colocated trainer thread under <paramref name="qos"/> (default: <see cref="TrainerQosMode.Throttle"/>);
    /// if it runs already, it is restarted under the new options.</summary>
    public void StartTrainer(TrainerQosOptions? qos = null)
    {
        qos ??= new TrainerQosOptions();
        qos.Validate();
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            StopTrainerLocked();
            StartTrainerLocked(qos);
        }
    }

    /// <summary>Stops the trainer thread after its current step (labels keep queueing). No-op when it is stopped.</summary>
    public void StopTrainer()
    {
        lock (_lifecycle)
        {
            if (_disposed) return;
            StopTrainerLocked();
            _lastQos = null;
        }
    }

    /// <summary>Whether the trainer thread runs.</summary>
    public bool TrainerRunning => Volatile.Read(ref _qos) is not null;

    /// <summary>Waits until the trainer has learned from every label queued so far (the partial last batch
    /// included). The trainer must be running; for tests and orderly shutdown.</summary>
    public void WaitForTrainer()
    {
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_qos is null) throw new InvalidOperationException("the trainer is not running (StartTrainer first)");
            _loaded.Live.Drain(flush: true);
        }
    }

    void StartTrainerLocked(TrainerQosOptions qos)
    {
        var run = new HostedTrainerQos(qos, _options.Logger);
        run.Start(_loaded.Live);
        Volatile.Write(ref _qos, run);
        _lastQos = qos;
    }

    void StopTrainerLocked()
    {
        var run = Interlocked.Exchange(ref _qos, null);
        run?.Stop(_loaded.Live);
    }

    /// <summary>Runs <paramref name="action"/> with the trainer stopped at a step boundary (the adapters' only writer
    /// quiet), then restarts it as it was.</summary>
    T WithTrainerStopped<T>(Func<T> action)
    {
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var qos = _qos is not null ? _lastQos : null;
            StopTrainerLocked();
            try { return action(); }
            finally { if (qos is not null) StartTrainerLocked(qos); }
        }
    }

    /// <summary>Writes what the adapters have learned (their state, and the rows their merges wrote into the base
    /// tables) to <c>adapters.bin</c> in <paramref name="directory"/> (created if needed), atomically: a crash leaves
    /// the previous file or the new one. The trainer pauses for the copy and resumes. Returns the file's path.</summary>
    public string SaveAdapters(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        return WithTrainerStopped(() => _loaded.SaveAdapters(directory));
    }

    /// <summary>Restores adapters saved by <see cref="SaveAdapters"/> from <paramref name="directory"/> into this
    /// model, right after <see cref="Load"/> (before the trainer has taken a step; otherwise
    /// <see cref="InvalidOperationException"/>). Its base must be the one they were trained on
    /// (<see cref="BaseFingerprint"/>) and its adapter options the same. False (nothing changed) when there is no
    /// saved file; a damaged or foreign file throws <see cref="HostedModelException"/> and changes nothing. Scoring
    /// waits while the state is applied.</summary>
    public bool RestoreAdapters(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        return WithTrainerStopped(() =>
        {
            var saved = _loaded.ReadAdapters(directory);
            if (saved is null) return false;
            _swap.EnterWriteLock();
            try { _loaded.ApplyAdapters(saved.Value); }
            finally { _swap.ExitWriteLock(); }
            return true;
        });
    }

    /// <summary>Replaces the base model by the one at <paramref name="path"/> (as <see cref="Load"/> reads it), with
    /// fresh adapters: what the old adapters learned belongs to the old base. The new model is loaded before the old
    /// one stops serving, so scoring pauses only for the swap; labels of requests scored before the swap are refused
    /// afterwards. The trainer restarts under its options if it ran. On a bad file (<see cref="HostedModelException"/>)
    /// the current model stays.</summary>
    public void ReloadBase(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var next = Loaded.From(path, _options);
            var qos = _qos is not null ? _lastQos : null;
            StopTrainerLocked();
            Loaded old;
            _swap.EnterWriteLock();
            try
            {
                old = _loaded;
                Volatile.Write(ref _loaded, next);
                Interlocked.Exchange(ref _scored, 0);
            }
            finally { _swap.ExitWriteLock(); }
            old.Dispose();
            if (qos is not null) StartTrainerLocked(qos);
        }
    }

    /// <summary>The current counters.</summary>
    public HostedModelStatus Status
    {
        get
        {
            _swap.EnterReadLock();
            try
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                var live = _loaded.Live;
                var t = live.Trainer;
                long bytes = 0, budget = 0, rows = 0;
                foreach (var a in live.Adapters)
                    if (a is not null) { bytes += a.AllocatedBytes; budget += a.BudgetBytes; rows += a.ActiveRows; }
                return new HostedModelStatus(Interlocked.Read(ref _scored), live.Ring.Joined, live.Ring.UnknownFeedback, t.SamplesProcessed,
                    t.Steps, t.QueueLength, t.Drops, TrainerRunning, DutyCycle(), bytes, budget, rows);
            }
            finally { _swap.ExitReadLock(); }
        }
    }

    double DutyCycle()
    {
        if (Volatile.Read(ref _qos) is null) return 0;
        var throttle = Volatile.Read(ref _loaded).Live.Trainer.Throttle;
        return throttle.IsPaused ? 0 : throttle.DutyCycle;
    }

    /// <summary>Stops the trainer and frees the model (its native-memory tables). Waits for scoring calls in
    /// progress; later calls throw <see cref="ObjectDisposedException"/>. Idempotent.</summary>
    public void Dispose()
    {
        lock (_lifecycle)
        {
            if (_disposed) return;
            StopTrainerLocked();
            _swap.EnterWriteLock();
            try { _disposed = true; }
            finally { _swap.ExitWriteLock(); }
            _meter.Dispose();
            _loaded.Dispose();
        }
    }

    /// <summary>One loaded base model with its live model, layout, fingerprint and the record of the rows its
    /// adapters merged into the base tables (saved with the adapters, <see cref="AdapterStore"/>).</summary>
    sealed class Loaded : IDisposable
    {
        public required LiveModel Live { get; init; }
        public required string Fingerprint { get; init; }
        public required EventBatchLayout Layout { get; init; }

        public static Loaded From(string path, HostedModelOptions options)
        {
            string full = Path.GetFullPath(path);
            var liveOptions = new LiveModelOptions
            {
                RingCapacity = options.RequestMemory,
                BaseBackend = ModelCopy.InlineCpuBackend,
                Trainer = new OnlineTrainerOptions
                {
                    BatchSize = options.TrainerBatchSize,
                    QueueCapacity = Math.Max(options.TrainerBatchSize, 1 << 16),
                    MaxBatchWait = options.MaxBatchWait,
                    Logger = options.Logger,
                    Adapter = new AdapterOptions
                    {
                        BudgetFraction = options.AdapterBudgetFraction,
                        InitialRank = options.InitialAdapterRank,
                        MaxRank = options.MaxAdapterRank,
                        MinRank = 1,
                        RankAdaptInterval = 200,
                        LearningRateA = options.AdapterLearningRate,
                    },
                },
            };
            try
            {
                TorchRuntime.EnsureInitialised();
                string fingerprint;
                DlrmModel baseModel;
                if (Directory.Exists(full))
                {
                    string sum = Path.Combine(full, Checkpoint.ManifestChecksumFile);
                    if (!File.Exists(sum)) throw new HostedModelException($"{full}: not a LiveDlrm checkpoint (no {Checkpoint.ManifestChecksumFile})");
                    baseModel = Checkpoint.Load(full, ModelCopy.InlineCpuBackend());
                    fingerprint = File.ReadAllText(sum).Trim();
                }
                else if (File.Exists(full))
                {
                    baseModel = PyTorchStateDict.Import(full, backend: ModelCopy.InlineCpuBackend());
                    fingerprint = FileFingerprint(full);
                }
                else throw new HostedModelException($"{full}: no such checkpoint directory or PyTorch file");
                LiveModel live;
                using (baseModel) live = LiveModel.FromBase(baseModel, liveOptions);
                var config = live.Model.Config;
                var layout = new EventBatchLayout(config.DenseFeatures,
                    config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
                return new Loaded { Live = live, Fingerprint = fingerprint, Layout = layout, Merged = AdapterStore.MergedRows.Track(live) };
            }
            catch (Exception e) when (e is CheckpointException or UserInputException or DlrmConfigException or InvalidDataException)
            {
                throw new HostedModelException(e.Message.StartsWith(full, StringComparison.Ordinal) ? e.Message : $"{full}: {e.Message}", e);
            }
        }

        static string FileFingerprint(string file)
        {
            var hash = new XxHash3();
            using (var f = File.OpenRead(file)) hash.Append(f);
            return "pytorch-xxh3:" + Convert.ToHexStringLower(hash.GetCurrentHash());
        }

        /// <summary>Rows the adapters merged into the base tables since load: saved with the adapters.</summary>
        public required AdapterStore.MergedRows Merged { get; init; }

        const string DiscardHint = "restore nothing (or delete the file) to start from fresh adapters";

        /// <summary>Trainer stopped (the caller's lifecycle lock).</summary>
        public string SaveAdapters(string directory)
        {
            var store = new AdapterStore(directory, DiscardHint);
            try { store.Save(AdapterStore.Export(Live, Fingerprint, Merged)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new HostedModelException($"{store.FilePath}: cannot write the adapters: {e.Message}", e);
            }
            return store.FilePath;
        }

        /// <summary>The verified file, or null when there is none.</summary>
        public (byte[] File, string Path)? ReadAdapters(string directory)
        {
            var store = new AdapterStore(directory, DiscardHint);
            try { return store.ReadVerified() is { } bytes ? (bytes, store.FilePath) : null; }
            catch (AdapterStoreException e) { throw new HostedModelException(e.Message, e); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new HostedModelException($"{store.FilePath}: cannot read the adapters: {e.Message}", e);
            }
        }

        /// <summary>Trainer stopped, scoring held back (the caller's locks).</summary>
        public void ApplyAdapters((byte[] File, string Path) saved)
        {
            // The file holds the adapters and the rows they merged into the base since it was loaded; rows this model
            // merged on its own would stay in its tables, so only a model that has not trained takes a restore.
            if (Live.Trainer.Steps > 0 || Live.Adapters.Any(a => a is not null && a.MergedRows > 0))
                throw new InvalidOperationException("adapters can be restored only into a model that has not trained yet (restore right after Load)");
            try { AdapterStore.Restore(Live, Fingerprint, Merged, saved.File, saved.Path, DiscardHint); }
            catch (AdapterStoreException e) { throw new HostedModelException(e.Message, e); }
        }

        public void Dispose() => Live.Dispose();
    }
}
