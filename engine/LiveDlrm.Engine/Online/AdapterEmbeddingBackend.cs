using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Online;

/// <summary>Serves a model's lookups through LoRA adapters: a table that has a <see cref="TableAdapter"/> is pooled by
/// the fused kernel (<c>Σ W + (Σ A)·B</c>, <see cref="LoraEmbeddingBag"/>); any other table by the inner backend.
/// Plugging this in as the model's <see cref="IEmbeddingBackend"/> is the whole integration: the model's Predict and
/// training Forward then see the adapted rows with no change to model code. Adapters are matched by table
/// reference, so an adapter must be built on the very table object the model holds.
///
/// Over an <see cref="IBaseCopyBackend"/> (the PIM backend) an adapted table is pooled by the inner backend from its
/// own copy and the host adds only the adapter term; merges are pushed to that copy (<see cref="BaseCopyAdapterPath"/>).</summary>
public sealed class AdapterEmbeddingBackend : IEmbeddingBackend
{
    readonly IEmbeddingBackend _inner;
    readonly bool _ownsInner;
    readonly EmbeddingWorkerPool? _pool;
    readonly Dictionary<EmbeddingTable, TableAdapter> _adapters = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<EmbeddingTable, BaseCopyAdapterPath> _baseCopyPaths = new(ReferenceEqualityComparer.Instance);

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
        if (_adapters.ContainsKey(adapter.Table))
            throw new ArgumentException($"table '{adapter.Table.Name}' already has an adapter attached", nameof(adapter));
        if (_inner is IBaseCopyBackend baseCopy)
        {
            var path = new BaseCopyAdapterPath(adapter, baseCopy);
            adapter.MergeObserver = path;   // throws (nothing attached) if the adapter already reports to someone else
            _baseCopyPaths.Add(adapter.Table, path);
        }
        _adapters.Add(adapter.Table, adapter);
    }

    /// <summary>Rows pushed to the inner backend's copy of <paramref name="table"/> after merges (0 unless the inner
    /// backend is an <see cref="IBaseCopyBackend"/>).</summary>
    public long PushedRows(EmbeddingTable table) => _baseCopyPaths.GetValueOrDefault(table)?.PushedRows ?? 0;

    public TableAdapter? AdapterOf(EmbeddingTable table) => _adapters.GetValueOrDefault(table);

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        if (_baseCopyPaths.TryGetValue(table, out var path))
            path.Forward(indices, offsets, output, pooling, weights, _pool);
        else if (_adapters.TryGetValue(table, out var adapter))
            LoraEmbeddingBag.Forward(adapter, indices, offsets, output, pooling, weights, _pool);
        else
            _inner.Forward(table, indices, offsets, output, pooling, weights);
    }

    /// <summary>Disposes the inner backend (if owned) and detaches from the adapters' merges; the adapters belong to
    /// whoever created them.</summary>
    public void Dispose()
    {
        foreach (var path in _baseCopyPaths.Values) path.Dispose();
        if (_ownsInner) _inner.Dispose();
    }
}
