using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Replay;
using LiveDlrm.Scheduling;

namespace LiveDlrm.Serving.Node;

/// <summary><see cref="ILiveNode"/> over the engine's <see cref="LiveModel"/>: a checkpoint loaded as the live
/// model's base (lookups on the request thread), its adapters, served-request ring and trainer.</summary>
internal sealed class LiveModelNode : ILiveNode
{
    readonly LiveModel _live;
    readonly object _lifecycle = new();
    // While the trainer is paused for a save, joined labels are held here (feedback never waits); while it is
    // stopped by the operator they are dropped, so a restart does not train a stale backlog.
    readonly List<(ServedEvent Served, float Label)> _held = new();
    bool _holding, _dropping = true, _running, _disposed;
    long _droppedStopped;

    public LiveModel Live => _live;
    public DlrmModel Model => _live.Model;
    public EventBatchLayout Layout { get; }
    public string Fingerprint { get; }
    public IReadOnlyList<TableAdapter?> Adapters => _live.Adapters;
    public IEnumerable<string> MeterNames => _live.Meters.Select(m => m.Name);
    /// <summary>Joined labels dropped because the trainer was stopped.</summary>
    public long DroppedWhileStopped { get { lock (_held) return _droppedStopped; } }

    LiveModelNode(LiveModel live, string fingerprint)
    {
        _live = live;
        Fingerprint = fingerprint;
        Layout = new EventBatchLayout(live.Model.Config.DenseFeatures,
            live.Model.Config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
    }

    /// <summary>Loads the checkpoint directory <paramref name="checkpoint"/> (a <see cref="CheckpointException"/>
    /// names what is wrong with it) as the base of a new live model.</summary>
    public static LiveModelNode Load(string checkpoint, OnlineTrainerOptions trainerOptions, int ringCapacity)
    {
        string fingerprint = BaseFingerprint(checkpoint);
        using var baseModel = Checkpoint.Load(checkpoint, ModelCopy.InlineCpuBackend());
        var live = LiveModel.FromBase(baseModel, new LiveModelOptions
        {
            Trainer = trainerOptions, RingCapacity = ringCapacity, BaseBackend = ModelCopy.InlineCpuBackend,
        });
        return new LiveModelNode(live, fingerprint);
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
        _live.Serve(batch, scores);
    }

    /// <summary>Where joined examples go instead of the local trainer (a fleet node publishes them to the log and
    /// trains only from it); null = the local trainer.</summary>
    public Action<ServedEvent, float>? ExampleSink { get; set; }

    public bool Feedback(long requestId, float label)
    {
        if (!_live.Ring.TryTake(requestId, out var served)) return false;
        if (ExampleSink is { } sink) { sink(served, label); return true; }
        lock (_held)
        {
            if (_holding) { _held.Add((served, label)); return true; }
            if (_dropping) { _droppedStopped++; return true; }
        }
        _live.Trainer.Enqueue(served, label);
        return true;
    }

    public bool Forget(long requestId) => _live.Ring.Forget(requestId);

    public bool TrainerRunning { get { lock (_lifecycle) return _running; } }
    public ITrainerThrottle? Throttle { get { lock (_lifecycle) return _running ? _live.Trainer.Throttle : null; } }
    public IReadOnlyList<int> TrainerThreadIds { get { lock (_lifecycle) return _running ? _live.Trainer.ThreadIds : []; } }

    public void StartTrainer(Action<int>? onThreadStart)
    {
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_running) return;
            _live.Start(onThreadStart);
            _running = true;
        }
        List<(ServedEvent, float)> held;
        lock (_held)
        {
            _holding = _dropping = false;
            held = new(_held);
            _held.Clear();
        }
        foreach (var (served, label) in held) _live.Trainer.Enqueue(served, label);
    }

    public void StopTrainer(bool hold)
    {
        lock (_held)
        {
            _holding = hold;
            _dropping = !hold;
        }
        lock (_lifecycle)
        {
            if (!_running) return;
            _live.Stop();
            _running = false;
        }
    }

    public TrainerStatus Status
    {
        get
        {
            var t = _live.Trainer;
            return new TrainerStatus(t.SamplesProcessed, t.Steps, t.DiscardedSteps, t.Drops, t.QueueLength, t.LagSeconds,
                                     _live.Ring.Expired, _live.Ring.Stored);
        }
    }

    public void Dispose()
    {
        lock (_lifecycle)
        {
            if (_disposed) return;
            _disposed = true;
            _running = false;
        }
        _live.Dispose();
    }
}
