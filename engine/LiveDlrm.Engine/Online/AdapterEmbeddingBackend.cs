using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Online;

/// <summary>Serves a model's lookups through LoRA adapters: a table that has a <see cref="TableAdapter"/> is pooled by
/// the fused kernel (<c>Σ W + (Σ A)·B</c>, <see cref="LoraEmbeddingBag"/>); any other table by the inner backend.
/// Plugging this in as the model's <see cref="IEmbeddingBackend"/> is the whole integration: the model's Predict and
/// training Forward then see the adapted rows with no change to model code. Adapters are matched by table
/// reference, so an adapter must be built on the very table object the model holds.</summary>
public sealed class AdapterEmbeddingBackend : IEmbeddingBackend
{
    readonly IEmbeddingBackend _inner;
    readonly bool _ownsInner;
    readonly EmbeddingWorkerPool? _pool;
    readonly Dictionary<EmbeddingTable, TableAdapter> _adapters = new(ReferenceEqualityComparer.Instance);

    /// <param name="inner">Backend for tables without an adapter.</param>
    /// <param name="ownsInner">Dispose <paramref name="inner"/> with this backend.</param>
    /// <param name="pool">Workers for the adapted lookups; null = the inner CPU backend's pool (so an inline inner
    /// backend keeps adapted lookups inline too), else the shared pool.</param>
    public AdapterEmbeddingBackend(IEmbeddingBackend inner, bool ownsInner = true, EmbeddingWorkerPool? pool = null)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        _ownsInner = ownsInner;
        _pool = pool ?? (inner as CpuEmbeddingBackend)?.Pool;
    }

    public string Name => "lora+" + _inner.Name;

    /// <summary>Routes lookups of <paramref name="adapter"/>'s table through it. Call before serving starts (the
    /// routing map is not synchronised against concurrent lookups).</summary>
    public void Attach(TableAdapter adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        if (!_adapters.TryAdd(adapter.Table, adapter))
            throw new ArgumentException($"table '{adapter.Table.Name}' already has an adapter attached", nameof(adapter));
    }

    public TableAdapter? AdapterOf(EmbeddingTable table) => _adapters.GetValueOrDefault(table);

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        if (_adapters.TryGetValue(table, out var adapter))
            LoraEmbeddingBag.Forward(adapter, indices, offsets, output, pooling, weights, _pool);
        else
            _inner.Forward(table, indices, offsets, output, pooling, weights);
    }

    /// <summary>Disposes the inner backend (if owned); the adapters belong to whoever created them.</summary>
    public void Dispose()
    {
        if (_ownsInner) _inner.Dispose();
    }
}
