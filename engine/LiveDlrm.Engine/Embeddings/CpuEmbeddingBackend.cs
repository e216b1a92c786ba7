namespace LiveDlrm.Embeddings;

/// <summary>The CPU SIMD kernels as an <see cref="IEmbeddingBackend"/>. Named after the ISA level its lookups run
/// at ("cpu-avx512", "cpu-avx2", "cpu-sse4", "cpu-scalar").</summary>
internal sealed class CpuEmbeddingBackend : IEmbeddingBackend
{
    readonly EmbeddingWorkerPool? _pool;
    readonly bool _ownsPool;

    /// <param name="pool">Workers for the lookups; null uses <see cref="EmbeddingWorkerPool.Shared"/>.</param>
    /// <param name="ownsPool">Dispose <paramref name="pool"/> with the backend.</param>
    public CpuEmbeddingBackend(EmbeddingWorkerPool? pool = null, bool ownsPool = false)
    {
        _pool = pool;
        _ownsPool = ownsPool && pool is not null;
    }

    public string Name => "cpu-" + EmbeddingKernels.IsaName(EmbeddingKernels.CurrentIsa);

    public EmbeddingWorkerPool Pool => _pool ?? EmbeddingWorkerPool.Shared;

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
        => EmbeddingBag.Forward(table, indices, offsets, output, pooling, weights, _pool);

    public void Forward(EmbeddingTable table, ReadOnlySpan<int> indices, ReadOnlySpan<int> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
        => EmbeddingBag.Forward(table, indices, offsets, output, pooling, weights, _pool);

    public void Dispose()
    {
        if (_ownsPool) _pool!.Dispose();
    }
}
