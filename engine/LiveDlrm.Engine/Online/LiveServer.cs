using LiveDlrm.Data;
using LiveDlrm.Model;
using static TorchSharp.torch;

namespace LiveDlrm.Online;

/// <summary>
/// The inference side of colocated training: serves batches through the live (adapter-backed) model, remembers
/// each served request in a bounded <see cref="ServedRequestRing"/> — with its pooled embeddings when the trainer
/// reuses the serving forward — and joins labels arriving later (<see cref="Feedback"/>) into the trainer's queue.
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
    /// request id (<see cref="EventBatch.RequestIds"/>) for a later <see cref="Feedback"/>.</summary>
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
        var p = _model.Dense.forward(dense, pooled).sigmoid_();
        TensorMemory.Span(p).CopyTo(scores);
        bool keepPooled = _trainer.Options.ReuseForward;
        for (int i = 0; i < b; i++)
            Ring.Store(ServedEvent.FromBatch(batch, i, keepPooled ? pooledSpan : default, d));
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
