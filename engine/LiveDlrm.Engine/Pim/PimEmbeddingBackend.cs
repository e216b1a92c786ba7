using LiveDlrm.Embeddings;

namespace LiveDlrm.Pim;

/// <summary>Options of <see cref="PimEmbeddingBackend"/>.</summary>
public sealed record PimBackendOptions
{
    public PimBackendKind Backend { get; init; } = PimBackendKind.Auto;
    /// <summary>DPUs per table (each table gets its own DPU set).</summary>
    public int DpusPerTable { get; init; } = 64;
    /// <summary>Strategy for tables that are not loaded explicitly with <see cref="PimEmbeddingBackend.Load"/>.
    /// Without an access profile only the uniform strategies apply.</summary>
    public PimStrategy DefaultStrategy { get; init; } = PimStrategy.UniformRowWise;
    public string? KernelPath { get; init; }
    /// <summary>Hears which backend was chosen and what was loaded.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>Embedding lookups on UPMEM DPUs (or the emulation): each table lives on its own DPU set, placed by a
/// <see cref="PimPlan"/>; a batch is grouped per DPU on the host, summed on the DPUs, reduced on the host.
/// Returns Σ W[i] of the DPUs' copy (Sum; Mean divides on the host). As an <see cref="IBaseCopyBackend"/> it tells
/// <c>Online.AdapterEmbeddingBackend</c> to add LoRA adapter terms on the host and to push merged rows here
/// (<see cref="UpdateBaseRows"/>). Weighted sums send one fp32 weight per item and skip pair sums; fp16/int8 tables are refused.</summary>
public sealed class PimEmbeddingBackend : IBaseCopyBackend
{
    readonly PimBackendOptions _options;
    readonly Dictionary<EmbeddingTable, PimDevice> _devices = new(ReferenceEqualityComparer.Instance);
    readonly Lock _lock = new();
    bool _disposed;

    public PimEmbeddingBackend(PimBackendOptions? options = null)
    {
        _options = options ?? new PimBackendOptions();
        if (_options.DpusPerTable <= 0) throw new ArgumentOutOfRangeException(nameof(options), _options.DpusPerTable, "DpusPerTable must be positive");
    }

    /// <summary>The backend actually in use once a table is loaded ("pim-emulated", "pim-hardware"...); before that the requested one.</summary>
    public string Name
    {
        get
        {
            lock (_lock)
                return "pim-" + (_devices.Values.FirstOrDefault()?.Backend ?? _options.Backend).ToString().ToLowerInvariant();
        }
    }

    /// <summary>Places <paramref name="table"/> on a new DPU set with <paramref name="plan"/> (replacing any previous placement).</summary>
    public void Load(EmbeddingTable table, PimPlan plan)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(plan);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var device = PimDevice.Open(plan.DpuCount, _options.Backend, _options.KernelPath, _options.Log);
            try { device.Load(table, plan); }
            catch { device.Dispose(); throw; }
            if (_devices.Remove(table, out var old)) old.Dispose();
            _devices[table] = device;
            _options.Log?.Invoke($"pim: table '{table.Name}' loaded, {plan.Strategy} over {plan.DpuCount} DPUs ({plan.Tiles} tiles of {plan.SliceFloats} floats, {plan.CachedRows.Length} cached rows)");
        }
    }

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_devices.TryGetValue(table, out var device))
            {
                Load(table, PimPartitioner.Build(_options.DefaultStrategy, AccessProfile.Uniform(table.Rows, 1, 1, 1), table.Dim, _options.DpusPerTable));
                device = _devices[table];
            }
            device.LookupSum(indices, offsets, output[..(bags * table.Dim)], pooling == PoolingMode.WeightedSum ? weights : default);
        }
        if (pooling == PoolingMode.Mean)
            for (int b = 0; b < bags; b++)
            {
                long n = offsets[b + 1] - offsets[b];
                if (n == 0) continue;
                float inv = 1f / n;
                foreach (ref float v in output.Slice(b * table.Dim, table.Dim)) v *= inv;
            }
    }

    /// <summary>Pushes the current values of <paramref name="rows"/> of a loaded table to its DPUs.</summary>
    public void UpdateRows(EmbeddingTable table, ReadOnlySpan<long> rows)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_devices.TryGetValue(table, out var device)) throw new InvalidOperationException($"table '{table.Name}' is not loaded on PIM");
            device.UpdateRows(table, rows);
        }
    }

    /// <summary>Pushes <paramref name="rows"/> if <paramref name="table"/> is loaded; otherwise nothing to do, since its
    /// first load reads the host table. One batched <c>pim_update_rows</c> per call.</summary>
    public void UpdateBaseRows(EmbeddingTable table, ReadOnlySpan<long> rows)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (rows.IsEmpty) return;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_devices.TryGetValue(table, out var device)) device.UpdateRows(table, rows);
        }
    }

    /// <summary>Counters of the DPU set holding <paramref name="table"/> (its Backend field says what was chosen).</summary>
    public PimStats Stats(EmbeddingTable table)
    {
        lock (_lock)
            return _devices.TryGetValue(table, out var d) ? d.Stats() : throw new InvalidOperationException($"table '{table.Name}' is not loaded on PIM");
    }

    public PimPlan? PlanOf(EmbeddingTable table)
    {
        lock (_lock) return _devices.TryGetValue(table, out var d) ? d.Plan : null;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var d in _devices.Values) d.Dispose();
            _devices.Clear();
        }
    }
}
