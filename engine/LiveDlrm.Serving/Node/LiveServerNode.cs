using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Scheduling;

namespace LiveDlrm.Serving.Node;

/// <summary><see cref="ILiveNode"/> over the engine's <see cref="LiveServer"/> and <see cref="OnlineTrainer"/>:
/// a checkpoint loaded behind an <see cref="AdapterEmbeddingBackend"/> (lookups on the request thread), adapters
/// sized by the trainer options, a served-request ring. A stopped trainer cannot be restarted, so a restart builds a
/// new trainer and server over the same adapters; requests still waiting for their label in the old ring are then
/// lost.</summary>
internal sealed class LiveServerNode : ILiveNode
{
    readonly OnlineTrainerOptions _trainerOptions;
    readonly int _ringCapacity;
    readonly TableAdapter?[] _adapters;
    readonly ReaderWriterLockSlim _feed = new();
    readonly object _lifecycle = new();
    LiveServer _server;
    volatile bool _running;
    bool _used, _disposed;

    public DlrmModel Model { get; }
    public EventBatchLayout Layout { get; }
    public string Fingerprint { get; }
    public IReadOnlyList<TableAdapter?> Adapters => _adapters;

    LiveServerNode(DlrmModel model, string fingerprint, OnlineTrainerOptions trainerOptions, int ringCapacity, AdapterEmbeddingBackend backend)
    {
        Model = model;
        Fingerprint = fingerprint;
        _trainerOptions = trainerOptions;
        _ringCapacity = ringCapacity;
        Layout = new EventBatchLayout(model.Config.DenseFeatures,
            model.Config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
        _adapters = OnlineTrainer.CreateAdapters(model, backend, trainerOptions);
        try { _server = new LiveServer(new OnlineTrainer(model, _adapters, trainerOptions), ringCapacity); }
        catch { foreach (var a in _adapters) a?.Dispose(); throw; }
    }

    /// <summary>Loads the checkpoint directory <paramref name="checkpoint"/> (a <see cref="CheckpointException"/> names
    /// what is wrong with it).</summary>
    public static LiveServerNode Load(string checkpoint, OnlineTrainerOptions trainerOptions, int ringCapacity)
    {
        string fingerprint = BaseFingerprint(checkpoint);
        var backend = new AdapterEmbeddingBackend(new CpuEmbeddingBackend(new EmbeddingWorkerPool(0), ownsPool: true));
        DlrmModel model;
        try { model = Checkpoint.Load(checkpoint, backend); }
        catch { backend.Dispose(); throw; }
        try { return new LiveServerNode(model, fingerprint, trainerOptions, ringCapacity, backend); }
        catch { model.Dispose(); throw; }
    }

    /// <summary>The checkpoint's manifest checksum: the manifest lists every file with its XxHash3, so equal
    /// fingerprints mean equal tables and dense weights.</summary>
    public static string BaseFingerprint(string checkpoint)
    {
        string file = Path.Combine(Path.GetFullPath(checkpoint), Checkpoint.ManifestChecksumFile);
        if (!File.Exists(file)) throw new CheckpointException(file, "not a LiveDlrm checkpoint (no manifest checksum)");
        return File.ReadAllText(file).Trim();
    }

    [ThreadStatic] static bool t_oneTorchThread;

    public void Serve(EventBatch batch, Span<float> scores)
    {
        // libtorch's intra-op pool is per calling thread; requests run on many pool threads and must not fan out.
        if (!t_oneTorchThread) { TorchSharp.torch.set_num_threads(1); t_oneTorchThread = true; }
        Volatile.Read(ref _server).Serve(batch, scores);
    }

    public bool Feedback(long requestId, float label)
    {
        _feed.EnterReadLock();
        try
        {
            var server = Volatile.Read(ref _server);
            if (!server.Ring.TryTake(requestId, out var served)) return false;
            lock (_held)
            {
                // A stopped trainer would train a stale backlog when it starts again: its labels are dropped, counted.
                if (!_running) { _droppedStopped++; return true; }
                if (_holding) { _held.Add((served, label)); return true; }
            }
            server.Trainer.Enqueue(served, label);
            return true;
        }
        finally { _feed.ExitReadLock(); }
    }

    public bool Forget(long requestId) => Volatile.Read(ref _server).Ring.TryTake(requestId, out _);

    public bool TrainerRunning { get { lock (_lifecycle) return _running; } }
    public ITrainerThrottle? Throttle { get { lock (_lifecycle) return _running ? _server.Trainer.Throttle : null; } }
    public IReadOnlyList<int> TrainerThreadIds { get { lock (_lifecycle) return _running ? _server.Trainer.ThreadIds : []; } }

    public void StartTrainer(Action<int>? onThreadStart)
    {
        // Lock order everywhere: the feed lock, then the lifecycle lock.
        _feed.EnterWriteLock();
        try
        {
            lock (_lifecycle)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_running) return;
                if (_used)
                {
                    var old = _server;
                    _before = Status with { Drops = Status.Drops - Interlocked.Read(ref _droppedStopped) };
                    Volatile.Write(ref _server, new LiveServer(new OnlineTrainer(Model, _adapters, _trainerOptions), _ringCapacity));
                    old.Trainer.Dispose();
                }
                _server.Trainer.Start(1, onThreadStart);
                _running = _used = true;
            }
        }
        finally { _feed.ExitWriteLock(); }
    }

    public void StopTrainer()
    {
        lock (_lifecycle)
        {
            if (!_running) return;
            _server.Trainer.Stop();
            _running = false;
        }
    }

    // While quiesced, joined labels are held here instead of queued, so feedback never waits for a save.
    readonly List<(ServedEvent Served, float Label)> _held = new();
    bool _holding;
    long _droppedStopped;
    readonly SemaphoreSlim _quiesce = new(1, 1);

    public IDisposable QuiesceTrainer(TimeSpan timeout)
    {
        _quiesce.Wait();
        lock (_held) _holding = true;
        try
        {
            OnlineTrainer? trainer;
            lock (_lifecycle) trainer = _running ? _server.Trainer : null;
            // Once the queue is empty and no step runs, the trainer waits for labels, and none arrive until released.
            // A trainer paused by QoS drains only when it resumes: give up rather than wait long.
            if (trainer is not null && !Task.Run(() => trainer.Drain(flush: true)).Wait(timeout))
                throw new TimeoutException($"the trainer did not finish its queued labels within {timeout.TotalSeconds:F0} s (paused by QoS?)");
        }
        catch
        {
            EndQuiesce();
            throw;
        }
        return new Release(this);
    }

    void EndQuiesce()
    {
        List<(ServedEvent, float)> held;
        lock (_held)
        {
            _holding = false;
            held = new(_held);
            _held.Clear();
        }
        var trainer = Volatile.Read(ref _server).Trainer;
        foreach (var (served, label) in held) trainer.Enqueue(served, label);
        _quiesce.Release();
    }

    sealed class Release(LiveServerNode node) : IDisposable
    {
        int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) node.EndQuiesce(); }
    }

    TrainerStatus _before;   // totals of the trainers and rings replaced by restarts, so counters stay monotonic

    public TrainerStatus Status
    {
        get
        {
            var s = Volatile.Read(ref _server);
            var t = s.Trainer;
            var b = _before;
            long stopped;
            lock (_held) stopped = _droppedStopped;
            return new TrainerStatus(b.Samples + t.SamplesProcessed, b.Steps + t.Steps, b.Discarded + t.DiscardedSteps, b.Drops + t.Drops + stopped,
                                     t.QueueLength, t.LagSeconds, b.RingExpired + s.Ring.Expired, b.RingStored + s.Ring.Stored);
        }
    }

    public void Dispose()
    {
        lock (_lifecycle)
        {
            if (_disposed) return;
            _disposed = true;
            _server.Trainer.Dispose();
            _running = false;
        }
        foreach (var a in _adapters) a?.Dispose();
        Model.Dispose();
        _feed.Dispose();
        _quiesce.Dispose();
    }
}
