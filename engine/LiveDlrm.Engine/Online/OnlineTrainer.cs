using System.Diagnostics;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Scheduling;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Online;

/// <summary>
/// The colocated trainer: learns LoRA adapters on the embedding tables of the live model from labelled served
/// events, on its own thread, while the model keeps serving through the same adapters.
/// <para>A step takes <see cref="OnlineTrainerOptions.BatchSize"/> labelled events, runs the frozen dense part
/// forward from the pooled embeddings (the ones kept from serving when data reuse is on, else a fresh pooling
/// through the live adapters with the same kernels), BCE-with-logits, autograd backward to dL/d(pooled), and hands
/// each adapted table its bag gradients (<see cref="TableAdapter.ApplyGradients"/>: row-wise Adagrad on A, Adagrad
/// on B, or SGD; rank adaptation every N steps and eviction = merge under the memory budget happen there).
/// A non-finite loss or gradient discards the step before any adapter is touched (counted, logged).</para>
/// <para>Bounded: at most <see cref="OnlineTrainerOptions.QueueCapacity"/> labelled events wait; when the trainer
/// falls behind, the oldest are dropped and counted in <see cref="Drops"/>. Placement and QoS drive it through
/// <see cref="ITrainerHost"/>: thread ids, and a duty-cycle/pause gate checked between steps.</para>
/// </summary>
public sealed class OnlineTrainer : ITrainerHost
{
    readonly DlrmModel _model;
    readonly TableAdapter?[] _adapters;
    readonly OnlineTrainerOptions _options;
    readonly DutyCycleGate _gate = new();
    readonly Queue<ServedEvent> _queue = new();
    readonly object _lock = new();
    readonly List<int> _threadIds = new();
    EventBatch _batch;
    readonly FrozenDenseBackward? _backward;
    readonly LastLayerAdapter? _lastLayer;
    float[] _gradPooled = [];
    readonly bool[] _adapted;   // per table: has an adapter, so its pooled gradient is needed
    readonly float[] _gradLastWeight = [];   // last-layer inputs long whenever the reuse backward exists
    readonly List<ServedEvent> _taken = new();
    Thread? _thread;
    bool _stopping, _busy, _flush;
    long _enqueueTicks;
    long _samples, _steps, _discarded, _drops, _enqueued;
    long _newestEnqueuedTime = long.MinValue, _newestTrainedTime = long.MinValue;
    double _cpuSeconds;
    long _startTicks, _busyTicks;
    int _logged;
    Exception? _failure;

    public string Name => "livedlrm-online-trainer";
    public DlrmModel Model => _model;
    public IReadOnlyList<TableAdapter?> Adapters => _adapters;
    /// <summary>The additive update of the top MLP's last layer (<see cref="OnlineTrainerOptions.AdaptLastLayer"/>), else null.</summary>
    public LastLayerAdapter? LastLayer => _lastLayer;
    /// <summary>The C# backward from kept activations (data reuse), or null when the model's shape needs autograd.</summary>
    public FrozenDenseBackward? ReuseBackward => _backward;
    public OnlineTrainerOptions Options => _options;
    public ITrainerThrottle Throttle => _gate;
    public IReadOnlyList<int> ThreadIds { get { lock (_threadIds) return _threadIds.ToArray(); } }

    public long SamplesProcessed => Interlocked.Read(ref _samples);
    public long Steps => Interlocked.Read(ref _steps);
    /// <summary>Steps discarded because the loss or a gradient was NaN/Inf (or an adapter refused its update).</summary>
    public long DiscardedSteps => Interlocked.Read(ref _discarded);
    /// <summary>Labelled events dropped unseen because the queue was full (oldest first).</summary>
    public long Drops => Interlocked.Read(ref _drops);
    public long Enqueued => Interlocked.Read(ref _enqueued);
    public int QueueLength { get { lock (_lock) return _queue.Count; } }
    /// <summary>CPU-seconds the trainer thread spent in steps (thread CPU clock).</summary>
    public double CpuSeconds { get { lock (_lock) return _cpuSeconds; } }
    /// <summary>Event-time lag: newest enqueued event's timestamp minus the newest trained one's (0 when caught up).</summary>
    public long LagSeconds
    {
        get
        {
            lock (_lock)
            {
                if (_newestEnqueuedTime == long.MinValue) return 0;
                if (_newestTrainedTime == long.MinValue) return _queue.Count == 0 ? 0 : _newestEnqueuedTime - _queue.Peek().Timestamp;
                return Math.Max(0, _newestEnqueuedTime - _newestTrainedTime);
            }
        }
    }
    /// <summary>Samples per second of wall time since <see cref="Start"/>.</summary>
    public double SamplesPerSecond
    {
        get
        {
            long start = Interlocked.Read(ref _startTicks);
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
            double s = (double)Interlocked.Read(ref _busyTicks) / Stopwatch.Frequency;
            return s > 0 ? SamplesProcessed / s : 0;
        }
    }

    /// <param name="model">The live model; its backend must be the <see cref="AdapterEmbeddingBackend"/> the adapters
    /// are attached to. Its dense part is frozen (requires_grad off) by this constructor.</param>
    /// <param name="adapters">Per table (model order), its adapter or null for a table that is not adapted.</param>
    public OnlineTrainer(DlrmModel model, IReadOnlyList<TableAdapter?> adapters, OnlineTrainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(adapters);
        _options = options ?? new OnlineTrainerOptions();
        _options.Validate();
        if (adapters.Count != model.Tables.Count) throw new ArgumentException($"{adapters.Count} adapter entries for {model.Tables.Count} tables", nameof(adapters));
        var backend = model.Backend as AdapterEmbeddingBackend
            ?? throw new ArgumentException($"the model serves through '{model.Backend.Name}', not an AdapterEmbeddingBackend: adapter updates would never be served", nameof(model));
        for (int t = 0; t < adapters.Count; t++)
        {
            var a = adapters[t];
            if (a is null) continue;
            if (!ReferenceEquals(a.Table, model.Tables[t])) throw new ArgumentException($"adapter {t} is on table '{a.Table.Name}', not on the model's table object '{model.Tables[t].Name}'", nameof(adapters));
            if (!ReferenceEquals(backend.AdapterOf(a.Table), a)) throw new ArgumentException($"adapter of table '{a.Table.Name}' is not attached to the model's backend", nameof(adapters));
        }
        if (adapters.All(a => a is null)) throw new ArgumentException("no table has an adapter: nothing to train", nameof(adapters));
        _model = model;
        _adapters = adapters.ToArray();
        _adapted = _adapters.Select(a => a is not null).ToArray();
        _model.Dense.SetTrainable(false);
        if (FrozenDenseBackward.Supports(model.Config))
        {
            _backward = new FrozenDenseBackward(model.Dense, _adapted);
            _gradLastWeight = new float[_backward.LastLayerInputs];
        }
        if (_options.AdaptLastLayer)
        {
            if (_backward is null) throw new ArgumentException($"AdaptLastLayer needs a top MLP of ≥ 2 layers ending in one logit, the model has [{string.Join(", ", model.Config.TopMlp)}]", nameof(options));
            _lastLayer = new LastLayerAdapter(_backward.LastLayerInputs, _options.LastLayerLearningRate);
        }
        var layout = new EventBatchLayout(model.Config.DenseFeatures,
            model.Config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
        _batch = new EventBatch(layout, _options.BatchSize);
    }

    /// <summary>Adapters for every table of <paramref name="model"/> whose budget (<paramref name="options"/>'s
    /// <see cref="AdapterOptions.BudgetFraction"/> of its bytes) holds B and at least
    /// <see cref="OnlineTrainerOptions.MinAdapterRows"/> rows, attached to <paramref name="backend"/> (the model's);
    /// null entries for the others. Adapter seeds differ per table.</summary>
    public static TableAdapter?[] CreateAdapters(DlrmModel model, AdapterEmbeddingBackend backend, OnlineTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var result = new TableAdapter?[model.Tables.Count];
        var fractions = BudgetFractions(model, options);
        for (int t = 0; t < result.Length; t++)
        {
            var table = model.Tables[t];
            var ao = options.Adapter with { Seed = options.Adapter.Seed + t, MaxRank = Math.Min(options.Adapter.MaxRank, table.Dim), BudgetFraction = fractions[t] };
            if (ao.InitialRank > ao.MaxRank) ao = ao with { InitialRank = ao.MaxRank };
            if (ao.MinRank > ao.MaxRank) ao = ao with { MinRank = ao.MaxRank };
            long budget = (long)Math.Floor(ao.BudgetFraction * table.ByteSize);
            var (slots, _) = ao.BudgetFraction > 0 ? TableAdapter.SizeFor(budget, ao.InitialRank, table.Dim) : (0, 0);
            if (slots < Math.Min(options.MinAdapterRows, table.Rows))
            {
                options.Log?.Invoke($"table '{table.Name}' ({table.ByteSize} bytes): a {ao.BudgetFraction:P2} budget holds {slots} adapter rows at rank {ao.InitialRank} (< {options.MinAdapterRows}); not adapted");
                continue;
            }
            var adapter = new TableAdapter(table, ao);
            backend.Attach(adapter);
            result[t] = adapter;
        }
        return result;
    }

    /// <summary>Each table's budget fraction: the option itself per table, or with <see cref="OnlineTrainerOptions.JointBudget"/>
    /// grants whose bytes sum to at most BudgetFraction × Σ table bytes (0 = no adapter).</summary>
    static double[] BudgetFractions(DlrmModel model, OnlineTrainerOptions options)
    {
        var tables = model.Tables;
        double fraction = options.Adapter.BudgetFraction;
        var result = new double[tables.Count];
        if (!options.JointBudget) { Array.Fill(result, fraction); return result; }
        long total = (long)Math.Floor(fraction * tables.Sum(t => t.ByteSize));
        var grant = new long[tables.Count];
        var small = new List<int>();
        for (int t = 0; t < tables.Count; t++)
        {
            var (slots, _) = TableAdapter.SizeFor((long)Math.Floor(fraction * tables[t].ByteSize), options.Adapter.InitialRank, tables[t].Dim);
            if (slots < options.MinAdapterRows) small.Add(t);
        }
        long left = total;
        foreach (int t in small.OrderBy(t => tables[t].ByteSize))
        {
            // Smallest budget whose pool holds every row, never more than SmallTableBudgetMultiple × the table; failing that, the
            // smallest that holds MinAdapterRows; failing that, no adapter.
            long need = SmallestBudget(tables[t], tables[t].Rows) ?? SmallestBudget(tables[t], Math.Min(options.MinAdapterRows, tables[t].Rows)) ?? long.MaxValue;
            if (need > left) continue;
            grant[t] = need; left -= need;
        }
        var large = Enumerable.Range(0, tables.Count).Where(t => !small.Contains(t)).ToArray();
        long largeBytes = large.Sum(t => tables[t].ByteSize);
        foreach (int t in large) grant[t] = (long)Math.Floor((double)left * tables[t].ByteSize / largeBytes);
        long? SmallestBudget(EmbeddingTable table, long rows)
        {
            long max = (long)Math.Floor(options.SmallTableBudgetMultiple * table.ByteSize);
            for (long b = 64; b <= max; b += 64)
                if (TableAdapter.SizeFor(b, options.Adapter.InitialRank, table.Dim).Slots >= rows) return b;
            return null;
        }
        for (int t = 0; t < tables.Count; t++)
            // Rounded down so floor(fraction × bytes) in the adapter never exceeds the grant.
            result[t] = grant[t] == 0 ? 0 : Math.Min(AdapterOptions.MaxBudgetFraction, Math.Max(1e-12, (grant[t] - 1) / (double)tables[t].ByteSize));
        if (tables.Select((tb, t) => (long)Math.Floor(result[t] * tb.ByteSize)).Sum() > total)
            throw new InvalidOperationException("joint adapter budgets exceed the total budget");
        return result;
    }

    // ---------------------------------------------------------------- input

    /// <summary>Queues a labelled event for training. When the queue is full the oldest waiting event is dropped
    /// (counted in <see cref="Drops"/>). Never blocks on the trainer.</summary>
    public void Enqueue(ServedEvent served, float label)
    {
        ArgumentNullException.ThrowIfNull(served);
        if (!(label == 0f || label == 1f)) throw new ArgumentOutOfRangeException(nameof(label), label, $"request {served.RequestId}: label must be 0 or 1");
        if (served.Bags.Length != _model.Tables.Count || served.Dense.Length != _model.Config.DenseFeatures)
            throw new ArgumentException($"request {served.RequestId}: {served.Dense.Length} dense / {served.Bags.Length} sparse features, the model has {_model.Config.DenseFeatures} / {_model.Tables.Count}", nameof(served));
        served.Label = label;
        lock (_lock)
        {
            if (_queue.Count == 0) _enqueueTicks = Stopwatch.GetTimestamp();
            if (_queue.Count >= _options.QueueCapacity)
            {
                _queue.Dequeue();
                _drops++;
            }
            _queue.Enqueue(served);
            _enqueued++;
            if (served.Timestamp > _newestEnqueuedTime) _newestEnqueuedTime = served.Timestamp;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Queues every event of a labelled batch directly (a replay source with no serving step; the
    /// trainer pools them itself).</summary>
    public void Enqueue(EventBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        for (int i = 0; i < batch.Count; i++) Enqueue(ServedEvent.FromBatch(batch, i, default, _model.Config.Dim), batch.Labels[i]);
    }

    /// <summary>Blocks until fewer than a batch of events wait and no step runs (<paramref name="flush"/>: until the
    /// queue is empty, training a final partial batch). Rethrows a failure of the trainer thread. While the trainer
    /// is paused by its throttle this waits for the resume.</summary>
    public void Drain(bool flush = false)
    {
        lock (_lock)
        {
            if (_thread is null) throw new InvalidOperationException("the online trainer is not started");
            if (flush) { _flush = true; Monitor.PulseAll(_lock); }
            while (_failure is null && (_busy || (flush ? _queue.Count > 0 : _queue.Count >= _options.BatchSize)))
                Monitor.Wait(_lock, 100);
            _flush = false;
            if (_failure is not null) throw new InvalidOperationException("the online trainer thread failed", _failure);
        }
    }

    // ---------------------------------------------------------------- thread

    public void Start(int threads = 1, Action<int>? onThreadStart = null)
    {
        if (threads != 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "the online trainer runs one thread: adapters accept a single writer");
        lock (_lock)
        {
            if (_thread is not null) throw new InvalidOperationException("the online trainer is already started");
            _thread = new Thread(() => Run(onThreadStart)) { Name = "livedlrm-trainer-0", IsBackground = true };
        }
        Interlocked.Exchange(ref _startTicks, Stopwatch.GetTimestamp());
        _thread.Start();
    }

    void Run(Action<int>? onThreadStart)
    {
        try
        {
            lock (_threadIds) _threadIds.Add(Numa.ThreadAffinity.IsAvailable ? Numa.ThreadAffinity.CurrentThreadId() : Environment.CurrentManagedThreadId);
            onThreadStart?.Invoke(0);
            // Insurance: where libtorch's intra-op count is a per-thread (OpenMP) setting, a new thread would start at
            // the process default and the reference (autograd) path could fan out to workers whose CPU is not on
            // this thread's clock. (On libtorch 2.10 here a new thread already inherits the main thread's 1.)
            torch.set_num_threads(1);
            // Torch ops of the step run on this thread alone, so its CPU clock is the trainer's whole cost.
            while (true)
            {
                lock (_lock)
                {
                    // A pause holds the thread here too, not only after its next step (the gate's boundary).
                    while (!_stopping && (!BatchReady() || _gate.IsPaused)) Monitor.Wait(_lock, 50);
                    if (_stopping) return;
                    _taken.Clear();
                    while (_taken.Count < _options.BatchSize && _queue.Count > 0) _taken.Add(_queue.Dequeue());
                    if (_queue.Count > 0) _enqueueTicks = Stopwatch.GetTimestamp();
                    _busy = true;
                }
                long t0 = Stopwatch.GetTimestamp();
                double cpu0 = ThreadCpuClock.Now();
                bool applied = TrainOn(_taken);
                double cpu = ThreadCpuClock.Now() - cpu0;
                long busy = Stopwatch.GetTimestamp() - t0;
                lock (_lock)
                {
                    _busy = false;
                    _cpuSeconds += cpu;
                    _busyTicks += busy;
                    _samples += _taken.Count;
                    if (applied) _steps++;
                    long newest = _taken.Max(e => e.Timestamp);
                    if (newest > _newestTrainedTime) _newestTrainedTime = newest;
                    Monitor.PulseAll(_lock);
                }
                if (!_gate.AfterStep(busy)) return;
            }
        }
        catch (Exception e)
        {
            lock (_lock) { _failure = e; _busy = false; Monitor.PulseAll(_lock); }
            _options.Log?.Invoke($"online trainer thread failed: {e}");
        }
    }

    bool BatchReady()
    {
        int n = _queue.Count;
        if (n == 0) return false;
        if (n >= _options.BatchSize || _flush) return true;
        return _options.MaxBatchWait is { } wait && Stopwatch.GetElapsedTime(_enqueueTicks) >= wait;
    }

    public void Stop()
    {
        Thread? t;
        lock (_lock)
        {
            _stopping = true;
            t = _thread;
            Monitor.PulseAll(_lock);
        }
        _gate.Release();
        t?.Join();
    }

    // ---------------------------------------------------------------- one step

    // How far ahead TrainOn asks for a batch's events: the object, then its arrays, then its bags' index arrays.
    const int PrefetchObjectsAhead = 12, PrefetchArraysAhead = 6, PrefetchBagsAhead = 3;

    /// <summary>One optimizer step on <paramref name="samples"/> (at most a batch). Returns false when it was
    /// discarded. Runs on the trainer thread; exposed for tests and synchronous use (never concurrently with a
    /// started trainer).</summary>
    internal bool TrainOn(IReadOnlyList<ServedEvent> samples)
    {
        int b = samples.Count;
        if (b == 0) return false;
        if (b > _batch.Capacity) _batch = new EventBatch(_batch.Layout, b);
        var batch = _batch;
        batch.Clear();
        bool reuseAll = _options.ReuseForward;
        int pooledFloats = _model.Tables.Count * _model.Config.Dim, activationFloats = _backward?.ActivationLength ?? 0;
        for (int e = 0; e < Math.Min(b, PrefetchObjectsAhead); e++) ServedEvent.PrefetchObject(samples[e]);
        for (int e = 0; e < Math.Min(b, PrefetchArraysAhead); e++) samples[e].PrefetchArrays(pooledFloats, activationFloats);
        for (int e = 0; e < Math.Min(b, PrefetchBagsAhead); e++) samples[e].PrefetchBags();
        for (int e = 0; e < b; e++)
        {
            // The events are cold (see ServedEvent.PrefetchObject): each stage a few events ahead of the next one.
            if (e + PrefetchObjectsAhead < b) ServedEvent.PrefetchObject(samples[e + PrefetchObjectsAhead]);
            if (e + PrefetchArraysAhead < b) samples[e + PrefetchArraysAhead].PrefetchArrays(pooledFloats, activationFloats);
            if (e + PrefetchBagsAhead < b) samples[e + PrefetchBagsAhead].PrefetchBags();
            var s = samples[e];
            int row = batch.AddEvent(s.Label, s.Timestamp, s.RequestId);
            s.Dense.CopyTo(batch.DenseRowForWrite(row));
            for (int t = 0; t < s.Bags.Length; t++)
                foreach (long i in s.Bags[t]) batch.AddIndex(t, i);
            reuseAll &= s.Pooled is not null;
        }
        int tables = _model.Tables.Count, d = _model.Config.Dim;
        if (_gradPooled.Length < tables * b * d) _gradPooled = new float[tables * b * d];
        var gradPooled = _gradPooled.AsSpan(0, tables * b * d);
        var lastDelta = _lastLayer?.Current;
        float gradLastBias;
        double lossValue;
        if (reuseAll && _backward is not null && samples.All(s => s.Activations is not null))
            lossValue = _backward.Backward(samples, lastDelta, gradPooled, _gradLastWeight, out gradLastBias);
        else
            lossValue = AutogradBackward(samples, batch, reuseAll, lastDelta, gradPooled, _gradLastWeight, out gradLastBias);

        if (!double.IsFinite(lossValue)) return Discard($"loss is {lossValue}", samples);
        for (int t = 0; t < tables; t++)
            if (_adapted[t])   // the others are never used (and zero on the reuse path)
                foreach (float g in gradPooled.Slice(t * b * d, b * d))
                    if (!float.IsFinite(g)) return Discard("a pooled-embedding gradient is not finite", samples);
        if (_lastLayer is not null)
        {
            foreach (float g in _gradLastWeight)
                if (!float.IsFinite(g)) return Discard("a last-layer gradient is not finite", samples);
            if (!float.IsFinite(gradLastBias)) return Discard("the last-layer bias gradient is not finite", samples);
        }

        bool allApplied = true;
        for (int t = 0; t < tables; t++)
        {
            var adapter = _adapters[t];
            if (adapter is null) continue;
            if (!adapter.ApplyGradients(batch.Indices(t), batch.Offsets(t), gradPooled.Slice(t * b * d, b * d), _model.Config.Tables[t].Pooling))
                allApplied = false;
        }
        if (_lastLayer is not null && !_lastLayer.Apply(_gradLastWeight, gradLastBias)) allApplied = false;
        if (!allApplied) return Discard("an adapter refused a non-finite update", samples);
        return true;
    }

    /// <summary>The reference path (<c>--no-reuse</c>, or events that kept no activations): the frozen dense part
    /// forward from the pooled embeddings (kept from serving when <paramref name="reusePooled"/>, else pooled
    /// again through the live adapters), BCE-with-logits, TorchSharp autograd backward. Same outputs as
    /// <see cref="FrozenDenseBackward.Backward"/>.</summary>
    double AutogradBackward(IReadOnlyList<ServedEvent> samples, EventBatch batch, bool reusePooled, LastLayerAdapter.Snapshot? lastDelta,
                            Span<float> gradPooled, Span<float> gradLastWeight, out float gradLastBias)
    {
        int b = samples.Count, tables = _model.Tables.Count, d = _model.Config.Dim;
        using var scope = NewDisposeScope();
        var pooled = empty(tables, b, d);
        var ps = TensorMemory.Span(pooled);
        if (reusePooled)
            for (int i = 0; i < b; i++)
            {
                var src = samples[i].Pooled!;
                for (int t = 0; t < tables; t++) src.AsSpan(t * d, d).CopyTo(ps.Slice((t * b + i) * d, d));
            }
        else
            _model.Pool(batch, ps);
        pooled.requires_grad_(true);
        var dense = empty(b, _model.Config.DenseFeatures);
        batch.Dense.CopyTo(TensorMemory.Span(dense));
        Tensor logits;
        Tensor? deltaW = null, deltaB = null;
        if (lastDelta is null)
            logits = _model.Dense.forward(dense, pooled);
        else
        {
            // The served last layer is W + ΔW: add h·ΔWᵀ + Δb with ΔW, Δb as leaves so autograd gives their gradients.
            logits = _model.Dense.ForwardKeepingActivations(dense, pooled, out _, out var hidden);
            deltaW = tensor(lastDelta.Weight.ToArray()).requires_grad_(true);
            deltaB = tensor(new[] { lastDelta.Bias }).requires_grad_(true);
            logits = logits + hidden[^1].matmul(deltaW) + deltaB;
        }
        var labels = empty(b);
        batch.Labels.CopyTo(TensorMemory.Span(labels));
        var loss = nn.functional.binary_cross_entropy_with_logits(logits, labels);
        double lossValue = loss.item<float>();
        gradLastBias = 0;
        gradLastWeight.Clear();
        if (!double.IsFinite(lossValue)) return lossValue;
        loss.backward();
        var grad = pooled.grad ?? throw new InvalidOperationException("no gradient reached the pooled embeddings");
        TensorMemory.Span(grad).CopyTo(gradPooled);
        if (deltaW is not null && deltaB is not null)
        {
            TensorMemory.Span(deltaW.grad!).CopyTo(gradLastWeight);
            gradLastBias = TensorMemory.Span(deltaB.grad!)[0];
        }
        return lossValue;
    }

    bool Discard(string why, IReadOnlyList<ServedEvent> samples)
    {
        long n = Interlocked.Increment(ref _discarded);
        // The first few and then every 1000th: a poisoned stream must not flood the log.
        if (_logged < 10 || n % 1000 == 0)
        {
            _logged++;
            _options.Log?.Invoke($"online trainer: step {Steps + n} discarded ({why}; {samples.Count} events from request {samples[0].RequestId}); {n} discarded so far");
        }
        return false;
    }

    public void Dispose()
    {
        Stop();
        _gate.Dispose();
    }
}
