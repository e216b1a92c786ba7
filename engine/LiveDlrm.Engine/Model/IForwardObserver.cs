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

    /// <summary>Writes event <paramref name="row"/>'s activations (bottom output, then each hidden layer in order)
    /// into <paramref name="destination"/>.</summary>
    public void CopyEvent(int row, int batch, Span<float> destination)
    {
        if (IsEmpty) throw new InvalidOperationException("no activations were kept");
        int offset = Copy(bottom!, row, batch, destination);
        foreach (var t in topHidden!) offset += Copy(t, row, batch, destination[offset..]);
    }

    static int Copy(Tensor t, int row, int batch, Span<float> destination)
    {
        int w = (int)(t.numel() / batch);
        TensorMemory.Span(t).Slice(row * w, w).CopyTo(destination);
        return w;
    }
}
