using LiveDlrm.Embeddings;

namespace LiveDlrm.Model;

/// <summary>The scalar reference bag as a backend: stateless, safe for any number of concurrent callers. Used when
/// no optimised backend is given, and by tests as the oracle.</summary>
internal sealed class ReferenceEmbeddingBackend : IEmbeddingBackend
{
    public string Name => "reference";

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
        => EmbeddingBagReference.Forward(table, indices, offsets, output, pooling, weights);

    public void Dispose() { }
}
