using System.Runtime.CompilerServices;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Online;

/// <summary>
/// One optimizer step of the online trainer: assemble the labelled events into a batch, dL/d(pooled) (and the
/// last-layer gradients) by the reuse backward from the kept activations or by the autograd reference path,
/// refuse the step if anything is not finite, then hand each adapted table its bag gradients
/// (<see cref="TableAdapter.ApplyGradients"/>) and the last-layer adapter its own.
/// </summary>
sealed class TrainerStep
{
    readonly DlrmModel _model;
    readonly TableAdapter?[] _adapters;
    readonly bool[] _adapted;   // per table: has an adapter, so its pooled gradient is needed
    readonly LastLayerAdapter? _lastLayer;
    readonly FrozenDenseBackward? _backward;
    readonly OnlineTrainerOptions _options;
    readonly TrainerStats _stats;
    readonly float[] _gradLastWeight = [];   // last-layer inputs long whenever the reuse backward exists
    EventBatch _batch;
    float[] _gradPooled = [];
    int _logged;

    public FrozenDenseBackward? ReuseBackward => _backward;

    public TrainerStep(DlrmModel model, TableAdapter?[] adapters, LastLayerAdapter? lastLayer, OnlineTrainerOptions options, TrainerStats stats)
    {
        _model = model;
        _adapters = adapters;
        _adapted = adapters.Select(a => a is not null).ToArray();
        _lastLayer = lastLayer;
        _options = options;
        _stats = stats;
        if (FrozenDenseBackward.Supports(model.Config))
        {
            _backward = new FrozenDenseBackward(model.Dense, _adapted);
            _gradLastWeight = new float[_backward.LastLayerInputs];
        }
        if (lastLayer is not null && (_backward is null || lastLayer.Inputs != _backward.LastLayerInputs))
            throw new ArgumentException($"a last-layer adapter needs a top MLP of ≥ 2 layers ending in one logit, the model has [{string.Join(", ", model.Config.TopMlp)}]", nameof(lastLayer));
        var layout = new EventBatchLayout(model.Config.DenseFeatures,
            model.Config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
        _batch = new EventBatch(layout, options.BatchSize);
    }

    // How far ahead TrainOn asks for a batch's events: the object, then its arrays, then its bags' index arrays.
    const int PrefetchObjectsAhead = 12, PrefetchArraysAhead = 6, PrefetchBagsAhead = 3;

    /// <summary>One optimizer step on <paramref name="samples"/>. Returns false when it was discarded. Single
    /// caller at a time (the trainer thread, or a synchronous driver while the thread is stopped).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool TrainOn(IReadOnlyList<ServedEvent> samples)
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
        Tensor? deltaW = null, deltaB = null;
        if (lastDelta is not null)
        {
            // The served last layer is W + ΔW: ΔW, Δb as leaves so autograd gives their gradients.
            deltaW = tensor(lastDelta.Weight.ToArray()).requires_grad_(true);
            deltaB = tensor(new[] { lastDelta.Bias }).requires_grad_(true);
        }
        var logits = _model.Dense.ForwardWithDelta(dense, pooled, deltaW is null ? null : (deltaW, deltaB!));
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
        long n = _stats.Discard();
        // The first few and then every 1000th: a poisoned stream must not flood the log.
        if (_logged < 10 || n % 1000 == 0)
        {
            _logged++;
            _options.Logger.LogWarning("online trainer: step {Step} discarded ({Reason}; {Events} events from request {RequestId}); {Discarded} discarded so far",
                _stats.Steps + n, why, samples.Count, samples[0].RequestId, n);
        }
        return false;
    }
}
