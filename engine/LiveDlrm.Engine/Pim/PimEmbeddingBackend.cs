using LiveDlrm.Embeddings;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Pim;

/// <summary>Options of <see cref="PimEmbeddingBackend"/>.</summary>
internal sealed record PimBackendOptions
{
    public PimBackendKind Backend { get; init; } = PimBackendKind.Auto;
    /// <summary>DPUs of the set for tables that are not loaded explicitly (tables loaded with plans over the same DPU
    /// count share one set and one launch).</summary>
    public int DpusPerTable { get; init; } = 64;
    /// <summary>Strategy for tables that are not loaded explicitly with <see cref="PimEmbeddingBackend.Load"/>.
    /// Without an access profile only the uniform strategies apply.</summary>
    public PimStrategy DefaultStrategy { get; init; } = PimStrategy.UniformRowWise;
    /// <summary>How tables are stored and summed on the DPUs (weighted sums need <see cref="PimPrecision.Fp32"/>).</summary>
    public PimPrecision Precision { get; init; } = PimPrecision.Fp32;
    public string? KernelPath { get; init; }
    /// <summary>Extra emulation profile keys ("emuChip=v1A", "emuYield=SEED"); ignored by the SDK build.</summary>
    public string? Emulation { get; init; }
    /// <summary>Hears which backend was chosen and what was loaded.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>Embedding lookups on UPMEM DPUs (or the emulation). Tables whose plans use the same number of DPUs share one
/// DPU set (up to <see cref="PimLayout.MaxTables"/> per set), each placed by its <see cref="PimPlan"/>; a batch is grouped
/// per DPU on the host, summed on the DPUs, reduced on the host, and <see cref="ForwardTables"/> (what <c>DlrmModel.Pool</c>
/// calls) serves several tables in one launch per set. Returns Σ W[i] of the DPUs' copy (Sum; Mean divides on the host). As an <see cref="IBaseCopyBackend"/>
/// it tells <c>Online.AdapterEmbeddingBackend</c> to add LoRA adapter terms on the host and to push merged rows here
/// (<see cref="UpdateBaseRows"/>). Weighted sums send one fp32 weight per item and skip pair sums; fp16/int8 host tables are refused.</summary>
internal sealed class PimEmbeddingBackend : IBaseCopyBackend
{
    readonly PimBackendOptions _options;
    readonly List<PimDevice> _devices = [];
    readonly Dictionary<EmbeddingTable, (PimDevice Device, int Id)> _placed = new(ReferenceEqualityComparer.Instance);
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
                return "pim-" + (_devices.FirstOrDefault()?.Backend ?? _options.Backend).ToString().ToLowerInvariant();
        }
    }

    /// <summary>Places <paramref name="table"/> with <paramref name="plan"/> on the DPU set of that size (replacing any
    /// previous placement); the set's other tables keep serving.</summary>
    public void Load(EmbeddingTable table, PimPlan plan)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(plan);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _placed.TryGetValue(table, out var old);
            PimDevice device;
            int id;
            if (old.Device is not null && old.Device.DpuCount == plan.DpuCount) (device, id) = old;
            else
            {
                device = _devices.FirstOrDefault(d => d.DpuCount == plan.DpuCount && FreeId(d) >= 0)
                         ?? OpenDevice(plan.DpuCount);
                id = FreeId(device);
            }
            device.Load(id, table, plan, _options.Precision);
            _placed[table] = (device, id);
            _options.Logger.LogInformation("pim: table '{Table}' loaded as table {Id} of a {Dpus}-DPU set, {Strategy} ({Tiles} tiles of {SliceFloats} {Precision}, {CachedRows} cached rows)",
                table.Name, id, device.DpuCount, plan.Strategy, plan.Tiles, plan.SliceFloats, _options.Precision == PimPrecision.Int32 ? "int32" : "fp32", plan.CachedRows.Length);
        }
    }

    PimDevice OpenDevice(int dpus)
    {
        var device = PimDevice.Open(dpus, _options.Backend, _options.KernelPath, _options.Logger, _options.Emulation);
        _devices.Add(device);
        return device;
    }

    int FreeId(PimDevice device)
    {
        for (int id = 0; id < PimLayout.MaxTables; id++)
            if (!_placed.Values.Any(p => p.Device == device && p.Id == id)) return id;
        return -1;
    }

    (PimDevice Device, int Id) Placement(EmbeddingTable table)
    {
        if (!_placed.TryGetValue(table, out var p))
        {
            Load(table, PimPartitioner.Build(_options.DefaultStrategy, AccessProfile.Uniform(table.Rows, 1, 1, 1), table.Dim, _options.DpusPerTable));
            p = _placed[table];
        }
        return p;
    }

    public void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var (device, id) = Placement(table);
            device.LookupSum(id, indices, offsets, output[..(bags * table.Dim)], pooling == PoolingMode.WeightedSum ? weights : default);
        }
        if (pooling == PoolingMode.Mean) DivideByCount(offsets, output, bags, table.Dim);
    }

    /// <summary>Several tables' batches: one launch per DPU set (all of a set's tables in one push, launch and pull), so
    /// a model whose tables share a set pools a whole batch in one launch. Every lookup is validated before anything is
    /// sent. A table listed twice is served in a second launch (a launch names each table once).</summary>
    public void ForwardTables(IReadOnlyList<TableLookup> lookups, Span<float> output)
    {
        var bags = TableLookup.Validate(lookups, output.Length);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Rounds: round r holds the r-th occurrence of each table; in each round one launch per set.
            var rounds = new List<Dictionary<PimDevice, List<PimTableLookup>>>();
            var seen = new Dictionary<EmbeddingTable, int>(ReferenceEqualityComparer.Instance);
            for (int k = 0; k < lookups.Count; k++)
            {
                var q = lookups[k];
                var (device, id) = Placement(q.Table);
                int round = seen.TryGetValue(q.Table, out int r) ? r + 1 : 0;
                seen[q.Table] = round;
                if (round == rounds.Count) rounds.Add([]);
                if (!rounds[round].TryGetValue(device, out var list)) rounds[round][device] = list = [];
                list.Add(new PimTableLookup(id, q.Indices, q.Offsets, q.OutputStart, q.Pooling == PoolingMode.WeightedSum ? q.Weights : default));
            }
            foreach (var groups in rounds)
                foreach (var (device, list) in groups) device.LookupTables(list.ToArray(), output);
        }
        for (int k = 0; k < lookups.Count; k++)
            if (lookups[k].Pooling == PoolingMode.Mean)
                DivideByCount(lookups[k].Offsets.Span, output.Slice(lookups[k].OutputStart, bags[k] * lookups[k].Table.Dim), bags[k], lookups[k].Table.Dim);
    }

    static void DivideByCount(ReadOnlySpan<long> offsets, Span<float> output, int bags, int dim)
    {
        for (int b = 0; b < bags; b++)
        {
            long n = offsets[b + 1] - offsets[b];
            if (n == 0) continue;
            float inv = 1f / n;
            foreach (ref float v in output.Slice(b * dim, dim)) v *= inv;
        }
    }

    /// <summary>Pushes the current values of <paramref name="rows"/> of a loaded table to its DPUs (batched: one push and
    /// one launch per round; <paramref name="perSlot"/>: one transfer call per stored vector).</summary>
    public void UpdateRows(EmbeddingTable table, ReadOnlySpan<long> rows, bool perSlot = false)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_placed.TryGetValue(table, out var p)) throw new InvalidOperationException($"table '{table.Name}' is not loaded on PIM");
            p.Device.UpdateRows(p.Id, table, rows, perSlot);
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
            if (_placed.TryGetValue(table, out var p)) p.Device.UpdateRows(p.Id, table, rows);
        }
    }

    /// <summary>Counters of the DPU set holding <paramref name="table"/>, shared with the set's other tables (its Backend
    /// field says what was chosen).</summary>
    public PimStats Stats(EmbeddingTable table)
    {
        lock (_lock)
            return _placed.TryGetValue(table, out var p) ? p.Device.Stats() : throw new InvalidOperationException($"table '{table.Name}' is not loaded on PIM");
    }

    public PimPlan? PlanOf(EmbeddingTable table)
    {
        lock (_lock) return _placed.TryGetValue(table, out var p) ? p.Device.PlanOf(p.Id) : null;
    }

    /// <summary>The fixed-point step of <paramref name="table"/> when stored as <see cref="PimPrecision.Int32"/> (1 for fp32).</summary>
    public double ScaleOf(EmbeddingTable table)
    {
        lock (_lock)
            return _placed.TryGetValue(table, out var p) ? p.Device.Scale(p.Id) : throw new InvalidOperationException($"table '{table.Name}' is not loaded on PIM");
    }

    /// <summary>DPU sets in use (tables with plans over the same DPU count share one).</summary>
    public int DeviceCount { get { lock (_lock) return _devices.Count; } }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var d in _devices) d.Dispose();
            _devices.Clear();
            _placed.Clear();
        }
    }
}
