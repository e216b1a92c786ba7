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
internal sealed class AdapterEmbeddingBackend : IEmbeddingBackend
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

    /// <summary>Several tables at once: every table the inner backend pools (those without an adapter, and adapted tables
    /// over a base-copy backend) goes to it in ONE <see cref="IEmbeddingBackend.ForwardTables"/> call — over PIM one
    /// launch for the batch — and the adapter terms are added after it, under each adapted table's read lock held across
    /// both (so a merge is seen whole or not at all, as in <see cref="Forward"/>). Tables pooled by the fused CPU kernel
    /// run after the inner call.</summary>
    public void ForwardTables(IReadOnlyList<TableLookup> lookups, Span<float> output)
    {
        var bags = TableLookup.Validate(lookups, output.Length);
        var inner = new List<TableLookup>(lookups.Count);
        var held = new List<BaseCopyAdapterPath>();
        try
        {
            foreach (var q in lookups)
            {
                if (_baseCopyPaths.TryGetValue(q.Table, out var path))
                {
                    if (!held.Contains(path)) { path.EnterLookup(); held.Add(path); }   // the lock does not recurse
                    inner.Add(q);
                }
                else if (!_adapters.ContainsKey(q.Table)) inner.Add(q);
            }
            if (inner.Count > 0) _inner.ForwardTables(inner, output);
            for (int k = 0; k < lookups.Count; k++)
                if (_baseCopyPaths.TryGetValue(lookups[k].Table, out var path))
                    path.AddAdapterTerm(lookups[k].Indices.Span, lookups[k].Offsets.Span, Range(output, lookups[k], bags[k]),
                                        lookups[k].Pooling, lookups[k].Weights.Span, _pool);
        }
        finally
        {
            foreach (var path in held) path.ExitLookup();
        }
        for (int k = 0; k < lookups.Count; k++)
            if (!_baseCopyPaths.ContainsKey(lookups[k].Table) && _adapters.TryGetValue(lookups[k].Table, out var adapter))
                LoraEmbeddingBag.Forward(adapter, lookups[k].Indices.Span, lookups[k].Offsets.Span, Range(output, lookups[k], bags[k]),
                                         lookups[k].Pooling, lookups[k].Weights.Span, _pool);

        static Span<float> Range(Span<float> output, TableLookup q, int bags) => output.Slice(q.OutputStart, bags * q.Table.Dim);
    }

    /// <summary>Disposes the inner backend (if owned) and detaches from the adapters' merges; the adapters belong to
    /// whoever created them.</summary>
    public void Dispose()
    {
        foreach (var path in _baseCopyPaths.Values) path.Dispose();
        if (_ownsInner) _inner.Dispose();
    }
}
