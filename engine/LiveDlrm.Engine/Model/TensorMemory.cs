using TorchSharp;

namespace LiveDlrm.Model;

/// <summary>Direct access to the memory of a float32 CPU tensor, so the engine's kernels write pooled embeddings
/// and read gradients in place (TorchSharp has no public tensor-over-native-pointer factory, so the engine writes
/// into tensors libtorch allocated instead). Valid while the tensor is alive.</summary>
internal static unsafe class TensorMemory
{
    public static float* Pointer(torch.Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.dtype != torch.ScalarType.Float32) throw new ArgumentException($"expected a float32 tensor, got {tensor.dtype}", nameof(tensor));
        if (tensor.device_type != DeviceType.CPU) throw new ArgumentException("expected a CPU tensor", nameof(tensor));
        if (!tensor.is_contiguous()) throw new ArgumentException("expected a contiguous tensor", nameof(tensor));
        using var storage = tensor.storage<float>();
        return (float*)storage.data_ptr() + tensor.storage_offset();
    }

    public static Span<float> Span(torch.Tensor tensor) => new(Pointer(tensor), checked((int)tensor.numel()));
}
