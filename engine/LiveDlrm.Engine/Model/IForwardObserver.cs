using LiveDlrm.Data;
using static TorchSharp.torch;

namespace LiveDlrm.Model;

/// <summary>Receives what one <see cref="DlrmModel.Predict(EventBatch, Span{float}, IForwardObserver?)"/> computed,
/// before the scratch it lives in is reused: the served-request ring keeps it for the trainer.</summary>
internal interface IForwardObserver
{
    /// <summary>Ask for the dense activations (<see cref="DenseActivations"/>), not only the pooled embeddings.</summary>
    bool KeepsActivations { get; }

    /// <summary><paramref name="pooled"/> is the batch's table-major <c>[T, B, d]</c> pooled output; both it and
    /// <paramref name="activations"/> are valid only during the call.</summary>
    void Observe(EventBatch batch, ReadOnlySpan<float> pooled, DenseActivations activations);
}

/// <summary>The dense activations of one forward (<see cref="DlrmDenseNet.ForwardKeepingActivations(Tensor, Tensor, out Tensor, out Tensor[])"/>):
/// the bottom-MLP output [B, d] and each top hidden layer's output after its ReLU; empty when not kept.</summary>
internal readonly struct DenseActivations(Tensor? bottom, Tensor[]? topHidden)
{
    public bool IsEmpty => bottom is null;
    /// <summary>Floats per event of the bottom output plus every hidden layer (the kept activation record).</summary>
    public int LengthPerEvent(int batch) => IsEmpty ? 0 : (int)(bottom!.numel() + topHidden!.Sum(h => h.numel())) / batch;

    /// <summary>Writes every event's activation record, event-major (<c>[batch, LengthPerEvent]</c>), into
    /// <paramref name="destination"/>. Reaching a tensor's memory costs several libtorch calls (dtype, device,
    /// contiguity, storage), so a recorder that keeps every event's activations does it once per tensor per batch
    /// here, not once per event (per event it was about 40 % of what keeping requests cost the serving thread).</summary>
    public void CopyBatch(int batch, Span<float> destination)
    {
        if (IsEmpty) throw new InvalidOperationException("no activations were kept");
        int length = LengthPerEvent(batch);
        if (destination.Length < batch * length) throw new ArgumentException($"destination holds {destination.Length} floats, the batch needs {batch * length}", nameof(destination));
        int offset = CopyColumns(bottom!, batch, length, 0, destination);
        foreach (var t in topHidden!) offset += CopyColumns(t, batch, length, offset, destination);
    }

    static int CopyColumns(Tensor t, int batch, int length, int offset, Span<float> destination)
    {
        var source = TensorMemory.Span(t);
        int w = source.Length / batch;
        for (int row = 0; row < batch; row++) source.Slice(row * w, w).CopyTo(destination.Slice(row * length + offset, w));
        return w;
    }
}
