using System.Buffers;
using System.Diagnostics.Metrics;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;

namespace LiveDlrm.Online;

/// <summary>
/// The colocated live model, and the one place it is put together: the base tables and dense net
/// (<see cref="Model"/>), the <see cref="AdapterEmbeddingBackend"/> that serves them through LoRA adapters, the
/// adapters themselves within their memory budget, the optional last-layer adapter hooked into the dense net, the
/// <see cref="OnlineTrainer"/> and the <see cref="ServedRequestRing"/> that joins labels to served requests.
/// <para><see cref="Serve"/> scores through <see cref="DlrmModel.Predict(EventBatch, Span{float}, IForwardObserver?)"/>
/// — the same code as <see cref="DlrmModel.Predict(EventBatch, Span{float})"/> — and remembers each event (with the
/// pooled embeddings and dense activations when the trainer reuses them); <see cref="Feedback"/> joins a label to
/// its request and queues it for the trainer thread (<see cref="Start"/>/<see cref="Stop"/>).</para>
/// <para>Thread safety: <see cref="Serve"/>, <see cref="Feedback"/> and the counters from any thread; the trainer
/// thread is the adapters' only writer. Ownership: everything listed above is owned and disposed here.</para>
/// </summary>
internal sealed class LiveModel : IDisposable
{
    public const string AdapterMeterName = "LiveDlrm.Online.Adapters";

    readonly TableAdapter?[] _adapters;
    readonly RingRecorder _recorder;
    readonly Meter _adapterMeter;
    bool _disposed;

    /// <summary>The served model: its Predict goes through the adapters and the last-layer update.</summary>
    public DlrmModel Model { get; }
    public LiveModelOptions Options { get; }
    /// <summary>The backend pooling the base rows (named in reports: a PIM backend knows its choice once loaded).</summary>
    public IEmbeddingBackend BaseBackend { get; }
    /// <summary>Per table (model order), its adapter or null for a table whose budget holds none.</summary>
    public IReadOnlyList<TableAdapter?> Adapters => _adapters;
    /// <summary>The additive update of the top MLP's last layer, or null (<see cref="OnlineTrainerOptions.AdaptLastLayer"/>).</summary>
    public LastLayerAdapter? LastLayer { get; }
    public OnlineTrainer Trainer { get; }
    public ServedRequestRing Ring { get; }
    /// <summary>The meters of the trainer, the ring and the adapters (memory and rank per table), for an exporter.</summary>
    public IReadOnlyList<Meter> Meters => [Trainer.Meter, Ring.Meter, _adapterMeter];

    /// <summary>A freshly initialised model (<see cref="DlrmModel.Create"/>, deterministic by <paramref name="seed"/>).</summary>
    public static LiveModel Create(DlrmConfig config, int seed, LiveModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new LiveModel(backend => DlrmModel.Create(config, seed, backend), options);
    }

    /// <summary>A live model on a deep copy of <paramref name="baseModel"/> (which stays the caller's, unchanged).</summary>
    public static LiveModel FromBase(DlrmModel baseModel, LiveModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        return new LiveModel(backend => ModelCopy.Clone(baseModel, backend), options);
    }

    /// <summary>A live model on <paramref name="tables"/> and <paramref name="dense"/>, taken over (disposed with it;
    /// also on failure here), e.g. as a checkpoint loader produced them.</summary>
    public static LiveModel Own(DlrmConfig config, IReadOnlyList<EmbeddingTable> tables, DlrmDenseNet dense, LiveModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tables);
        ArgumentNullException.ThrowIfNull(dense);
        return new LiveModel(backend =>
        {
            try { return new DlrmModel(config, tables, dense, backend); }
            catch
            {
                foreach (var t in tables) t.Dispose();
                dense.Dispose();
                throw;
            }
        }, options);
    }

    LiveModel(Func<IEmbeddingBackend, DlrmModel> build, LiveModelOptions? options)
    {
        Options = options ?? new LiveModelOptions();
        Options.Validate();
        var trainerOptions = Options.Trainer;
        BaseBackend = Options.BaseBackend?.Invoke() ?? new CpuEmbeddingBackend();
        AdapterEmbeddingBackend backend;
        try { backend = new AdapterEmbeddingBackend(BaseBackend); }
        catch { BaseBackend.Dispose(); throw; }
        try { Model = build(backend); }
        catch { backend.Dispose(); throw; }
        _adapters = [];
        try
        {
            _adapters = AdapterBudgets.Create(Model, backend, trainerOptions);
            if (trainerOptions.AdaptLastLayer)
            {
                if (!FrozenDenseBackward.Supports(Model.Config))
                    throw new ArgumentException($"AdaptLastLayer needs a top MLP of ≥ 2 layers ending in one logit, the model has [{string.Join(", ", Model.Config.TopMlp)}]", nameof(options));
                LastLayer = new LastLayerAdapter(Model.Dense.LastLayerInputs, trainerOptions.LastLayerLearningRate);
            }
            Trainer = new OnlineTrainer(Model, _adapters, LastLayer, trainerOptions);
            Model.Dense.LastLayerDelta = LastLayer;
            Ring = new ServedRequestRing(Options.RingCapacity);
            Trainer.RecycleTo = Ring;   // trained events go back to the ring's free list
            _recorder = new RingRecorder(Ring, Model.Config.Dim, trainerOptions, trainerOptions.ReuseForward ? Trainer.ReuseBackward : null);
            _adapterMeter = new Meter(AdapterMeterName);
            _adapterMeter.CreateObservableGauge("livedlrm.adapter.memory", () => PerTable(a => a.AllocatedBytes), "By", "Bytes an adapter holds (slots, B, map)");
            _adapterMeter.CreateObservableGauge("livedlrm.adapter.budget", () => PerTable(a => a.BudgetBytes), "By", "Bytes an adapter may hold");
            _adapterMeter.CreateObservableGauge("livedlrm.adapter.rank", () => PerTable(a => (long)a.Rank), "{rank}", "An adapter's current rank");
            _adapterMeter.CreateObservableCounter("livedlrm.adapter.merged_rows", () => PerTable(a => a.MergedRows), "{row}", "Adapter rows merged into the base table");
        }
        catch
        {
            Trainer?.Dispose();
            Ring?.Dispose();
            foreach (var a in _adapters) a?.Dispose();
            Model.Dispose();
            throw;
        }
    }

    IEnumerable<Measurement<long>> PerTable(Func<TableAdapter, long> value)
    {
        foreach (var a in _adapters)
            if (a is not null) yield return new Measurement<long>(value(a), new KeyValuePair<string, object?>("table", a.Table.Name));
    }

    /// <summary>Scores <paramref name="batch"/> into <paramref name="scores"/> and remembers every event by its
    /// request id (<see cref="EventBatch.RequestIds"/>) for a later <see cref="Feedback"/>. The scores are exactly
    /// <see cref="Predict"/>'s.</summary>
    public void Serve(EventBatch batch, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Model.Predict(batch, scores, _recorder);
    }

    /// <summary>Scores without remembering the requests (nothing will be trained on them).</summary>
    public void Predict(EventBatch batch, Span<float> scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Model.Predict(batch, scores);
    }

    /// <summary>The label (0 or 1) of request <paramref name="requestId"/> arrived: queue it for training. False (and
    /// counted in <see cref="ServedRequestRing.UnknownFeedback"/>) if the request is unknown, expired or already
    /// joined. A label other than 0 or 1 throws and leaves the request waiting.</summary>
    public bool Feedback(long requestId, float label)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        OnlineTrainer.CheckLabel(requestId, label);
        if (!Options.Trainer.Trains(requestId)) return false;   // not sampled for training: never kept, not unknown
        if (!Ring.TryTake(requestId, out var served)) return false;
        Trainer.Enqueue(served, label);
        return true;
    }

    /// <summary>Starts the trainer thread; <paramref name="onThreadStart"/> runs on it first (the plan's pinning).</summary>
    public void Start(Action<int>? onThreadStart = null) => Trainer.Start(1, onThreadStart);

    /// <summary>Stops the trainer thread after its current step; labelled events stay queued for a later start.</summary>
    public void Stop() => Trainer.Stop();

    /// <summary>See <see cref="OnlineTrainer.Drain"/>.</summary>
    public void Drain(bool flush = false) => Trainer.Drain(flush);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Trainer.Dispose();
        Model.Dense.LastLayerDelta = null;
        _adapterMeter.Dispose();
        Ring.Dispose();
        // Adapters after the trainer (no writer left) and before the model's tables they point into.
        foreach (var a in _adapters) a?.Dispose();
        Model.Dispose();
    }

    /// <summary>Stores each served event in the ring, with the serving forward's pooled embeddings when the trainer
    /// reuses them and its dense activations when the reuse backward can use them.</summary>
    sealed class RingRecorder(ServedRequestRing ring, int dim, OnlineTrainerOptions options, FrozenDenseBackward? backward) : IForwardObserver
    {
        readonly Func<long, bool>? _keep = options.TrainFraction >= 1 ? null : options.Trains;

        public bool KeepsActivations => backward is not null;

        public void Observe(EventBatch batch, ReadOnlySpan<float> pooled, DenseActivations activations)
        {
            int b = batch.Count;
            var kept = options.ReuseForward ? pooled : default;
            if (activations.IsEmpty)
            {
                ring.Store(batch, kept, dim, default, 0, _keep);
                return;
            }
            int length = backward!.ActivationLength;
            if (activations.LengthPerEvent(b) != length)
                throw new InvalidOperationException($"the forward kept {activations.LengthPerEvent(b)} activations an event, the backward expects {length}");
            // Serving threads may call this concurrently: the batch's records go to a rented buffer.
            var all = ArrayPool<float>.Shared.Rent(b * length);
            try
            {
                activations.CopyBatch(b, all);
                ring.Store(batch, kept, dim, all.AsSpan(0, b * length), length, _keep);
            }
            finally { ArrayPool<float>.Shared.Return(all); }
        }
    }
}
