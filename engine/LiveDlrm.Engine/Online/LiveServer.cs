using LiveDlrm.Data;
using LiveDlrm.Model;
using static TorchSharp.torch;

namespace LiveDlrm.Online;

/// <summary>
/// The inference side of colocated training: serves batches through the live (adapter-backed) model, remembers
/// each served request in a bounded <see cref="ServedRequestRing"/> — with its pooled embeddings and dense
/// activations when the trainer reuses the serving forward — and joins labels arriving later (<see cref="Feedback"/>) into the trainer's queue.
/// <see cref="Serve"/> may be called from several threads; <see cref="Feedback"/> too.
/// </summary>
public sealed class LiveServer
{
    readonly DlrmModel _model;
    readonly OnlineTrainer _trainer;

    public ServedRequestRing Ring { get; }
    public OnlineTrainer Trainer => _trainer;
    public DlrmModel Model => _model;
    /// <summary>Feedback calls whose request was found and queued for training.</summary>
    public long Joined => Interlocked.Read(ref _joined);
    long _joined;

    public LiveServer(OnlineTrainer trainer, int ringCapacity)
    {
        _trainer = trainer ?? throw new ArgumentNullException(nameof(trainer));
        _model = trainer.Model;
        Ring = new ServedRequestRing(ringCapacity);
    }

    /// <summary>Scores <paramref name="batch"/> into <paramref name="scores"/> and remembers every event by its
    /// request id (<see cref="EventBatch.RequestIds"/>) for a later <see cref="Feedback"/>. With
    /// <see cref="OnlineTrainerOptions.AdaptLastLayer"/> the logits include the trainer's current last-layer update
    /// (the plain <see cref="DlrmModel.Predict(EventBatch, Span{float})"/> serves the base last layer).</summary>
    public unsafe void Serve(EventBatch batch, Span<float> scores)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int b = batch.Count;
        if (scores.Length < b) throw new ArgumentException($"scores holds {scores.Length} floats for {b} events", nameof(scores));
        if (b == 0) return;
        int tables = _model.Tables.Count, d = _model.Config.Dim;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pooled = empty(tables, b, d);
        var pooledSpan = TensorMemory.Span(pooled);
        _model.Pool(batch, pooledSpan);
        var dense = empty(b, _model.Config.DenseFeatures);
        batch.Dense.CopyTo(TensorMemory.Span(dense));
        bool keepPooled = _trainer.Options.ReuseForward;
        var backward = _trainer.ReuseBackward;
        var lastLayer = _trainer.LastLayer;
        if (backward is null || (!keepPooled && lastLayer is null))
        {
            var p = _model.Dense.forward(dense, pooled).sigmoid_();
            TensorMemory.Span(p).CopyTo(scores);
            for (int i = 0; i < b; i++)
                Ring.Store(ServedEvent.FromBatch(batch, i, keepPooled ? pooledSpan : default, d));
            return;
        }
        var logits = _model.Dense.ForwardKeepingActivations(dense, pooled, out var bottom, out var hidden);
        var z = TensorMemory.Span(logits);
        var h = TensorMemory.Span(hidden[^1]);
        int lastIn = backward.LastLayerInputs;
        if (lastLayer is not null)
        {
            // One published version for the whole batch (versioned copy + atomic swap): never a torn ΔW.
            var delta = lastLayer.Current;
            for (int i = 0; i < b; i++)
            {
                float sum = delta.Bias;
                var hi = h.Slice(i * lastIn, lastIn);
                for (int k = 0; k < lastIn; k++) sum += hi[k] * delta.Weight[k];
                z[i] += sum;
            }
        }
        var probabilities = logits.sigmoid();
        TensorMemory.Span(probabilities).CopyTo(scores);
        if (!keepPooled)
        {
            for (int i = 0; i < b; i++) Ring.Store(ServedEvent.FromBatch(batch, i, default, d));
            return;
        }
        // The activations a frozen-dense backward needs, per event: bottom output, then each hidden layer's output.
        var x = TensorMemory.Span(bottom);
        var hiddenSpans = new float[hidden.Length][];
        for (int l = 0; l < hidden.Length; l++) hiddenSpans[l] = TensorMemory.Span(hidden[l]).ToArray();
        var activations = new float[backward.ActivationLength];
        for (int i = 0; i < b; i++)
        {
            x.Slice(i * d, d).CopyTo(activations);
            int offset = d;
            for (int l = 0; l < hidden.Length; l++)
            {
                int w = hiddenSpans[l].Length / b;
                hiddenSpans[l].AsSpan(i * w, w).CopyTo(activations.AsSpan(offset, w));
                offset += w;
            }
            Ring.Store(ServedEvent.FromBatch(batch, i, pooledSpan, d, activations));
        }
    }

    /// <summary>The label of request <paramref name="requestId"/> arrived: queue it for training. False (and
    /// counted in <see cref="ServedRequestRing.UnknownFeedback"/>) if the request is unknown or expired.</summary>
    public bool Feedback(long requestId, float label)
    {
        if (!Ring.TryTake(requestId, out var served)) return false;
        _trainer.Enqueue(served, label);
        Interlocked.Increment(ref _joined);
        return true;
    }
}
