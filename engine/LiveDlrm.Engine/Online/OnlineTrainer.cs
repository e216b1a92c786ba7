using System.Diagnostics;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Scheduling;
using TorchSharp;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Online;

/// <summary>
/// The colocated trainer of a <see cref="LiveModel"/>: learns the LoRA adapters on its embedding tables (and the
/// optional last-layer adapter) from labelled served events, on its own thread, while the model keeps serving
/// through the same adapters. Built and owned by <see cref="LiveModel"/>.
/// <para>Its parts: the bounded drop-oldest <see cref="TrainerQueue"/>, the <see cref="TrainerStep"/> (reuse or
/// autograd backward, adapter updates, refusal of non-finite steps), the <see cref="TrainerStats"/> with their
/// <see cref="System.Diagnostics.Metrics.Meter"/>, and here the thread: start, stop (restartable), the
/// duty-cycle/pause gate checked between steps, and <see cref="Drain"/>. Placement and QoS drive it through
/// <see cref="ITrainerHost"/>.</para>
/// </summary>
internal sealed class OnlineTrainer : ITrainerHost
{
    readonly DlrmModel _model;
    readonly TableAdapter?[] _adapters;
    readonly OnlineTrainerOptions _options;
    readonly TrainerStats _stats;
    readonly TrainerQueue _queue;
    readonly TrainerStep _step;
    readonly List<int> _threadIds = new();
    readonly List<ServedEvent> _taken = new();
    readonly object _lock = new();   // thread state (busy, failure) and Drain's wait for a finished step
    DutyCycleGate _gate = new();
    Thread? _thread;
    volatile bool _stopping, _flush;
    bool _busy;
    Exception? _failure;

    public string Name => "livedlrm-online-trainer";
    public DlrmModel Model => _model;
    public IReadOnlyList<TableAdapter?> Adapters => _adapters;
    /// <summary>The additive update of the top MLP's last layer (<see cref="OnlineTrainerOptions.AdaptLastLayer"/>), else null.</summary>
    public LastLayerAdapter? LastLayer { get; }
    /// <summary>The C# backward from kept activations (data reuse), or null when the model's shape needs autograd.</summary>
    public FrozenDenseBackward? ReuseBackward => _step.ReuseBackward;
    public OnlineTrainerOptions Options => _options;
    /// <summary>Where the thread hands its events back after a step (the live model's ring, which made them and
    /// refills them for later requests), or null. Enqueuing an event gives it to the trainer.</summary>
    internal ServedRequestRing? RecycleTo { get; set; }
    /// <summary>The throttle of the current run; each <see cref="Start"/> begins unthrottled.</summary>
    public ITrainerThrottle Throttle => Volatile.Read(ref _gate);
    public IReadOnlyList<int> ThreadIds { get { lock (_threadIds) return _threadIds.ToArray(); } }
    /// <summary>The trainer's counters as instruments (<see cref="TrainerStats.MeterName"/>).</summary>
    public System.Diagnostics.Metrics.Meter Meter => _stats.Meter;

    public long SamplesProcessed => _stats.Samples;
    public long Steps => _stats.Steps;
    /// <summary>Steps discarded because the loss or a gradient was NaN/Inf (or an adapter refused its update).</summary>
    public long DiscardedSteps => _stats.Discarded;
    /// <summary>Labelled events dropped unseen because the queue was full (oldest first).</summary>
    public long Drops => _stats.Drops;
    public long Enqueued => _stats.Enqueued;
    public int QueueLength => _queue.Count;
    /// <summary>CPU-seconds the trainer thread spent in steps (thread CPU clock).</summary>
    public double CpuSeconds => _stats.CpuSeconds;
    /// <summary>Event-time lag: newest enqueued event's timestamp minus the newest trained one's (0 when caught up).</summary>
    public long LagSeconds
    {
        get
        {
            long enqueued = _queue.NewestTime, trained = _stats.NewestTrainedTime;
            if (enqueued == long.MinValue) return 0;
            if (trained == long.MinValue) return _queue.TryPeek(out var oldest) ? enqueued - oldest.Timestamp : 0;
            return Math.Max(0, enqueued - trained);
        }
    }
    /// <summary>Samples per second of wall time since the first <see cref="Start"/>.</summary>
    public double SamplesPerSecond
    {
        get
        {
            long start = _stats.StartTicks;
            if (start == 0) return 0;
            double s = Stopwatch.GetElapsedTime(start).TotalSeconds;
            return s > 0 ? SamplesProcessed / s : 0;
        }
    }
    /// <summary>Samples per second of the trainer's busy time (its speed when not throttled or idle).</summary>
    public double SamplesPerBusySecond
    {
        get
        {
            double s = (double)_stats.BusyTicks / Stopwatch.Frequency;
            return s > 0 ? SamplesProcessed / s : 0;
        }
    }

    /// <param name="model">The live model, serving through the adapters. Its dense part is frozen (requires_grad
    /// off) here.</param>
    /// <param name="adapters">Per table (model order), its adapter or null for a table that is not adapted.</param>
    /// <param name="lastLayer">The last-layer adapter the model's dense net applies, or null.</param>
    internal OnlineTrainer(DlrmModel model, IReadOnlyList<TableAdapter?> adapters, LastLayerAdapter? lastLayer, OnlineTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(adapters);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (adapters.Count != model.Tables.Count) throw new ArgumentException($"{adapters.Count} adapter entries for {model.Tables.Count} tables", nameof(adapters));
        for (int t = 0; t < adapters.Count; t++)
            if (adapters[t] is { } a && !ReferenceEquals(a.Table, model.Tables[t]))
                throw new ArgumentException($"adapter {t} is on table '{a.Table.Name}', not on the model's table object '{model.Tables[t].Name}'", nameof(adapters));
        if (adapters.All(a => a is null)) throw new ArgumentException("no table has an adapter: nothing to train", nameof(adapters));
        _model = model;
        _adapters = adapters.ToArray();
        _options = options;
        LastLayer = lastLayer;
        _model.Dense.SetTrainable(false);
        _stats = new TrainerStats(() => LagSeconds, () => _queue!.Count);
        _queue = new TrainerQueue(options.QueueCapacity, _stats, options.BatchSize, options.MaxBatchWait is not null);
        _step = new TrainerStep(model, _adapters, lastLayer, options, _stats);
    }

    // ---------------------------------------------------------------- input

    /// <summary>Queues a labelled event for training. When the queue is full the oldest waiting event is dropped
    /// (counted in <see cref="Drops"/>). Never blocks on the trainer.</summary>
    public void Enqueue(ServedEvent served, float label)
    {
        ArgumentNullException.ThrowIfNull(served);
        CheckLabel(served.RequestId, label);
        if (served.Bags.Length != _model.Tables.Count || served.Dense.Length != _model.Config.DenseFeatures)
            throw new ArgumentException($"request {served.RequestId}: {served.Dense.Length} dense / {served.Bags.Length} sparse features, the model has {_model.Config.DenseFeatures} / {_model.Tables.Count}", nameof(served));
        served.Label = label;
        _queue.Write(served);
    }

    internal static void CheckLabel(long requestId, float label)
    {
        if (!(label == 0f || label == 1f)) throw new ArgumentOutOfRangeException(nameof(label), label, $"request {requestId}: label must be 0 or 1");
    }

    /// <summary>Queues every event of a labelled batch directly (a replay source with no serving step; the
    /// trainer pools them itself).</summary>
    public void Enqueue(EventBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        for (int i = 0; i < batch.Count; i++) Enqueue(ServedEvent.FromBatch(batch, i, default, _model.Config.Dim), batch.Labels[i]);
    }

    /// <summary>One optimizer step on <paramref name="samples"/> (labelled), on the calling thread: for tests and
    /// benchmarks that drive the trainer synchronously, never while the thread runs. False when discarded.</summary>
    internal bool TrainOn(IReadOnlyList<ServedEvent> samples) => _step.TrainOn(samples);

    /// <summary>Blocks until fewer than a batch of events wait and no step runs (<paramref name="flush"/>: until the
    /// queue is empty, training a final partial batch). Rethrows a failure of the trainer thread. While the trainer
    /// is paused by its throttle this waits for the resume.</summary>
    public void Drain(bool flush = false)
    {
        lock (_lock)
        {
            if (_thread is null) throw new InvalidOperationException("the online trainer is not started");
            if (flush) { _flush = true; _queue.Wake(); }
            while (_failure is null && (_busy || (flush ? _queue.Count > 0 : _queue.Count >= _options.BatchSize)))
                Monitor.Wait(_lock, 100);
            _flush = false;
            if (_failure is not null) throw new InvalidOperationException("the online trainer thread failed", _failure);
        }
    }

    // ---------------------------------------------------------------- thread

    /// <summary>Starts the trainer thread (again after <see cref="Stop"/>: the queue and the counters carry over,
    /// the throttle starts fresh).</summary>
    public void Start(int threads = 1, Action<int>? onThreadStart = null)
    {
        if (threads != 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "the online trainer runs one thread: adapters accept a single writer");
        lock (_lock)
        {
            if (_thread is not null) throw new InvalidOperationException("the online trainer is already started");
            if (_failure is not null) throw new InvalidOperationException("the online trainer thread failed", _failure);
            _stopping = false;
            var old = _gate;
            Volatile.Write(ref _gate, new DutyCycleGate());
            old.Dispose();
            var gate = _gate;
            _thread = new Thread(() => Run(gate, onThreadStart)) { Name = "livedlrm-trainer-0", IsBackground = true };
        }
        _stats.Started();
        _thread.Start();
    }

    void Run(DutyCycleGate gate, Action<int>? onThreadStart)
    {
        try
        {
            lock (_threadIds) _threadIds.Add(Numa.ThreadAffinity.IsAvailable ? Numa.ThreadAffinity.CurrentThreadId() : Environment.CurrentManagedThreadId);
            onThreadStart?.Invoke(0);
            // Insurance: where libtorch's intra-op count is a per-thread (OpenMP) setting, a new thread would start at
            // the process default and the reference (autograd) path could fan out to workers whose CPU is not on
            // this thread's clock. Torch ops of the step run on this thread alone, so its CPU clock is the whole cost.
            torch.set_num_threads(1);
            while (true)
            {
                // A pause holds the thread here too, not only after its next step (the gate's boundary).
                _queue.ResetWake();
                if (_stopping) return;
                if (gate.IsPaused || !BatchReady()) { _queue.WaitForArrival(50); continue; }
                lock (_lock) _busy = true;
                _queue.Take(_taken, _options.BatchSize);
                long t0 = Stopwatch.GetTimestamp();
                double cpu0 = ThreadCpuClock.Now();
                bool applied = _taken.Count > 0 && _step.TrainOn(_taken);
                double cpu = ThreadCpuClock.Now() - cpu0;
                long busy = Stopwatch.GetTimestamp() - t0;
                if (_taken.Count > 0) _stats.Step(_taken.Count, applied, NewestTimestamp(_taken), cpu, busy);
                RecycleTo?.Recycle(_taken);
                _taken.Clear();
                lock (_lock) { _busy = false; Monitor.PulseAll(_lock); }
                if (!gate.AfterStep(busy)) return;
            }
        }
        catch (Exception e)
        {
            lock (_lock) { _failure = e; _busy = false; Monitor.PulseAll(_lock); }
            _options.Logger.LogError(e, "online trainer thread failed");
        }
    }

    static long NewestTimestamp(List<ServedEvent> events)
    {
        long newest = long.MinValue;
        foreach (var e in events) newest = Math.Max(newest, e.Timestamp);
        return newest;
    }

    bool BatchReady()
    {
        int n = _queue.Count;
        if (n == 0) return false;
        if (n >= _options.BatchSize || _flush) return true;
        return _options.MaxBatchWait is { } wait && _queue.OldestWait >= wait;
    }

    /// <summary>Stops the thread after its current step and waits for it; queued events stay queued.</summary>
    public void Stop()
    {
        Thread? t;
        lock (_lock)
        {
            _stopping = true;
            t = _thread;
        }
        _queue.Wake();
        Volatile.Read(ref _gate).Release();
        t?.Join();
        lock (_lock) _thread = null;
        lock (_threadIds) _threadIds.Clear();
    }

    public void Dispose()
    {
        Stop();
        _gate.Dispose();
        _stats.Dispose();
    }
}
