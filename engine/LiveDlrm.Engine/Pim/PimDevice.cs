using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using Microsoft.Extensions.Logging;
using Native = LiveDlrm.Interop.Pim;

namespace LiveDlrm.Pim;

/// <summary>Which UPMEM runtime serves lookups. <see cref="Auto"/>: real DPUs when the library was built against the SDK
/// and DPUs can be allocated, else the SDK's simulator (SDK build) or the project's emulation (emulated build).</summary>
internal enum PimBackendKind { Auto, Hardware, Simulator, Emulated }

/// <summary>How a table's vectors are stored and summed on the DPUs. <see cref="Fp32"/>: as on the host (each add is a
/// soft-float call on a DPU, which has no FPU). <see cref="Int32"/>: fixed point with one scale per table chosen from its
/// range (2·max|w| ↦ 2^23), summed exactly in integers on the DPU and in int64 on the host, converted back once; error
/// ≤ half a scale step per lookup, independent of summation order. Weighted sums need <see cref="Fp32"/>.</summary>
internal enum PimPrecision { Fp32, Int32 }

/// <summary>Cumulative counters of one device (one DPU set, shared by its tables).</summary>
internal readonly record struct PimStats(PimBackendKind Backend, int Dpus, long Batches, long BytesToDpu, long BytesFromDpu, long Items,
                                       long CacheItems, TimeSpan ToDpu, TimeSpan Kernel, TimeSpan FromDpu, TimeSpan HostReduce,
                                       long Launches = 0, long UpdateLaunches = 0, long UpdatedVectors = 0, TimeSpan Update = default);

/// <summary>One table's batch in a multi-table lookup on one <see cref="PimDevice"/>: Σ rows (Σ weight·row with weights) per
/// bag into <c>bags × dim</c> floats of the call's output from <see cref="OutputStart"/>.</summary>
internal readonly record struct PimTableLookup(int TableId, ReadOnlyMemory<long> Indices, ReadOnlyMemory<long> Offsets, int OutputStart,
                                             ReadOnlyMemory<float> Weights = default);

/// <summary>One DPU set holding up to <see cref="PimLayout.MaxTables"/> tables, each placed by a <see cref="PimPlan"/> over
/// the set's DPUs: loads them, serves batches (several tables in one launch), pushes changed rows. Not thread-safe (one
/// caller at a time; <see cref="PimEmbeddingBackend"/> locks).</summary>
internal sealed unsafe class PimDevice : IDisposable
{
    sealed class Placed(EmbeddingTable table, PimPlan plan, PimPrecision precision, double[] setLoad)
    {
        public readonly EmbeddingTable Table = table;
        public readonly PimPlan Plan = plan;
        public readonly PimPrecision Precision = precision;
        public readonly PimRouter Router = new(plan, setLoad);
        public PimRoutedBatch? Routed;
    }

    readonly PimContextHandle _handle;
    readonly Placed?[] _tables = new Placed?[PimLayout.MaxTables];
    /// <summary>Per DPU, the load the routers of one launch have placed (cleared per launch): tables with copies spread
    /// their bags over different copies.</summary>
    readonly double[] _setLoad;

    public PimBackendKind Backend { get; }
    public int DpuCount { get; }
    /// <summary>The plan of table 0 (the single-table use).</summary>
    public PimPlan? Plan => _tables[0]?.Plan;
    /// <summary>The native context, for tests that drive the C ABI directly.</summary>
    internal PimContextHandle Handle => _handle;
    /// <summary>Reloads forced by int32 range overflow (merged rows outgrowing the table's scale).</summary>
    public int RangeReloads { get; private set; }

    PimDevice(PimContextHandle handle, PimBackendKind backend, int dpus) { _handle = handle; Backend = backend; DpuCount = dpus; _setLoad = new double[dpus]; }

    /// <summary>True when liblivedlrm_pim could be loaded.</summary>
    public static bool IsAvailable => NativeLibraries.IsAvailable(Libraries.Pim);
    /// <summary>True when the native library was built against the UPMEM SDK (else: the emulation).</summary>
    public static bool BuiltWithSdk => RequireLibrary() && Native.BuildKind() == 1;
    public static int MaxDpus => RequireLibrary() ? (int)Math.Min(int.MaxValue, Native.MaxDpus()) : 0;

    static bool RequireLibrary() => IsAvailable ? true
        : throw new DllNotFoundException("liblivedlrm_pim.so not found (build native/ with ./build.sh build; it is copied next to the app)");

    /// <summary>Allocates <paramref name="dpus"/> DPUs of the chosen backend and loads the kernel
    /// (<paramref name="kernelPath"/> null: the one next to the library). <paramref name="logger"/> hears the choice.
    /// <paramref name="emulation"/>: extra emulation profile keys ("emuChip=v1A", "emuYield=SEED"), ignored by the SDK build.</summary>
    public static PimDevice Open(int dpus, PimBackendKind kind = PimBackendKind.Auto, string? kernelPath = null, ILogger? logger = null,
                                 string? emulation = null)
    {
        RequireLibrary();
        if (dpus <= 0) throw new ArgumentOutOfRangeException(nameof(dpus), dpus, "at least one DPU");
        bool sdk = Native.BuildKind() == 1;
        if (!sdk && dpus > Native.MaxDpus())
            throw new ArgumentOutOfRangeException(nameof(dpus), dpus, $"the emulation allows at most {Native.MaxDpus()} DPUs per process");
        if (!sdk && kind is PimBackendKind.Hardware or PimBackendKind.Simulator)
            throw new PimException(Native.StatusDpu, $"PIM backend {kind} requested, but liblivedlrm_pim was built against the project's emulation " +
                                                  "(the UPMEM SDK was not found at build time); use Emulated or Auto");
        if (sdk && kind == PimBackendKind.Emulated)
            throw new PimException(Native.StatusDpu, "PIM backend Emulated requested, but liblivedlrm_pim was built against the UPMEM SDK " +
                                                  "(rebuild native/ with -DLIVEDLRM_PIM_FORCE_EMULATION=ON for the emulation)");
        // Auto on an SDK build: the hardware when the machine has DPU ranks (busy or too few ranks is an error, not a
        // silent switch to the functional simulator); the simulator only on a machine without any.
        var attempt = kind switch
        {
            PimBackendKind.Auto when !sdk => PimBackendKind.Emulated,
            PimBackendKind.Auto => HasDpuRanks() ? PimBackendKind.Hardware : PimBackendKind.Simulator,
            _ => kind,
        };
        string profile = attempt switch { PimBackendKind.Simulator => "backend=simulator", PimBackendKind.Emulated => "backend=emulated" + (emulation is null ? "" : "," + emulation), _ => "" };
        int status = Native.Open((uint)dpus, profile, kernelPath, out var handle);
        if (status != Native.StatusOk)
        {
            handle.Dispose();
            string why = kind == PimBackendKind.Auto && attempt == PimBackendKind.Hardware
                ? " (this machine has UPMEM ranks, so Auto does not fall back to the simulator: free ranks, ask for fewer DPUs, or choose Simulator)" : "";
            Native.Check(status, $"pim_open({dpus} DPUs, backend {attempt}){why}");
        }
        string reason = kind != PimBackendKind.Auto ? "" : attempt switch
        {
            PimBackendKind.Simulator => " (auto: no UPMEM ranks in /sys/class/dpu_rank, the SDK's functional simulator)",
            _ => " (auto)",
        };
        logger?.LogInformation("pim: {Dpus} DPUs on backend {Backend}{Reason}", dpus, attempt, reason);
        return new PimDevice(handle, attempt, dpus);
    }

    static bool HasDpuRanks() => Directory.Exists("/sys/class/dpu_rank") && Directory.EnumerateFileSystemEntries("/sys/class/dpu_rank").Any();

    /// <summary>Loads <paramref name="table"/> as table 0 (the single-table use).</summary>
    public void Load(EmbeddingTable table, PimPlan plan) => Load(0, table, plan);

    /// <summary>Loads <paramref name="table"/> (fp32 on the host) as table <paramref name="id"/> of the set, placed as
    /// <paramref name="plan"/> says and stored as <paramref name="precision"/>. Fails before any transfer on bad input; a
    /// failed transfer leaves this table unloaded; the set's other tables keep serving either way.</summary>
    public void Load(int id, EmbeddingTable table, PimPlan plan, PimPrecision precision = PimPrecision.Fp32)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(plan);
        CheckId(id);
        RequireFp32(table);
        if (plan.Rows != table.Rows || plan.Dim != table.Dim)
            throw new ArgumentException($"plan for {plan.Rows} x {plan.Dim} does not match table '{table.Name}' ({table.Rows} x {table.Dim})");
        if (plan.DpuCount != DpuCount)
            throw new ArgumentException($"plan for {plan.DpuCount} DPUs, the device has {DpuCount}");
        plan.Validate();
        var slotsPerDpu = new uint[DpuCount];
        long total = 0;
        for (int d = 0; d < DpuCount; d++) { slotsPerDpu[d] = (uint)plan.SlotsOn(d); total += slotsPerDpu[d]; }
        var slots = new PimSlotDesc[total];
        long i = 0;
        for (int d = 0; d < plan.UsedDpus; d++)
            foreach (var (a, b) in plan.MemberSlots[plan.MemberOf(d)])
                slots[i++] = new PimSlotDesc(a, b, (uint)plan.TileOf(d));
        var cache = new PimSlotDesc[plan.CacheVectors];
        for (int c = 0; c < plan.CachedRows.Length; c++)
            for (int t = 0; t < plan.Tiles; t++)
                cache[c * plan.Tiles + t] = new PimSlotDesc(plan.CachedRows[c], -1, (uint)t);
        int status;
        fixed (PimSlotDesc* s = slots)
        fixed (uint* per = slotsPerDpu)
        fixed (PimSlotDesc* cp = cache)
            status = Native.LoadTable(_handle, (uint)id, (float*)table.DataPointer, (ulong)table.Rows, (uint)table.Dim, (ulong)(table.RowStride / sizeof(float)),
                                      (uint)plan.SliceFloats, precision == PimPrecision.Int32 ? Native.FormatInt32 : Native.FormatFp32,
                                      s, per, cp, (uint)cache.Length);
        // Rejected input leaves the previous copy on the DPUs (the shim validates before transferring); any other
        // failure happened mid-transfer, and the shim has dropped the table.
        if (status is not (Native.StatusOk or Native.StatusArgument or Native.StatusCapacity)) _tables[id] = null;
        Native.Check(status, $"loading table '{table.Name}' onto {DpuCount} DPUs");
        _tables[id] = new Placed(table, plan, precision, _setLoad);
    }

    /// <summary>The plan of table <paramref name="id"/>, or null.</summary>
    public PimPlan? PlanOf(int id) { CheckId(id); return _tables[id]?.Plan; }

    /// <summary>The fixed-point step of an <see cref="PimPrecision.Int32"/> table (value = q · scale); 1 for fp32.</summary>
    public double Scale(int id)
    {
        CheckId(id);
        Native.Check(Native.TableScale(_handle, (uint)id, out double scale), "pim_table_scale");
        return scale;
    }

    /// <summary>Σ of each bag's rows of table 0 into <paramref name="output"/> (bags × dim).</summary>
    public void LookupSum(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output, ReadOnlySpan<float> weights = default)
        => LookupSum(0, indices, offsets, output, weights);

    /// <summary>Σ of each bag's rows (Σ weight·row when <paramref name="weights"/>, one per index, are given) of table
    /// <paramref name="id"/> into <paramref name="output"/> (bags × dim). The batch must already be validated against the table.</summary>
    public void LookupSum(int id, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output, ReadOnlySpan<float> weights = default)
    {
        var p = Require(id);
        Array.Clear(_setLoad);
        p.Routed = p.Router.Route(indices, offsets, p.Routed, weights);
        var r = p.Routed;
        fixed (PimHostSegment* segs = r.Segments)
        fixed (uint* spd = r.SegmentsPerDpu)
        fixed (uint* items = r.Items)
        fixed (float* w = r.Weights)
        fixed (uint* ipd = r.ItemsPerDpu)
        fixed (float* o = output)
        {
            var batch = new PimTableBatch
            {
                Table = (uint)id, NrBags = (uint)r.Bags, Segs = segs, SegsPerDpu = spd, Items = items, Weights = w, ItemsPerDpu = ipd,
                Output = o, OutputFloats = (ulong)output.Length,
            };
            Native.Check(Native.LookupTables(_handle, &batch, 1), "pim_lookup");
        }
    }

    /// <summary>Several tables' batches in one launch (one push, one launch, one pull), each into its range of
    /// <paramref name="output"/>. Each batch must already be validated against its table (output ranges included); each
    /// table appears once.</summary>
    public void LookupTables(ReadOnlySpan<PimTableLookup> lookups, Span<float> output)
    {
        int n = lookups.Length;
        if (n == 0) return;
        var batches = new PimTableBatch[n];
        var pins = new List<System.Buffers.MemoryHandle>(n * 5);
        Array.Clear(_setLoad);
        try
        {
            fixed (float* o = output)
            {
                for (int k = 0; k < n; k++)
                {
                    var q = lookups[k];
                    var p = Require(q.TableId);
                    for (int j = 0; j < k; j++)
                        if (lookups[j].TableId == q.TableId) throw new ArgumentException($"table {q.TableId} appears twice in one multi-table lookup");
                    // Each table keeps its own routed buffers, so all stay valid until the launch.
                    p.Routed = p.Router.Route(q.Indices.Span, q.Offsets.Span, p.Routed, q.Weights.Span);
                    var r = p.Routed;
                    long floats = (long)r.Bags * p.Plan.Dim;
                    if (q.OutputStart < 0 || q.OutputStart + floats > output.Length)
                        throw new ArgumentException($"table {q.TableId}: {r.Bags} bags × dim {p.Plan.Dim} from {q.OutputStart} do not fit an output of {output.Length} floats");
                    var hSegs = new Memory<PimHostSegment>(r.Segments).Pin();
                    var hSpd = new Memory<uint>(r.SegmentsPerDpu).Pin();
                    var hItems = new Memory<uint>(r.Items).Pin();
                    var hIpd = new Memory<uint>(r.ItemsPerDpu).Pin();
                    pins.AddRange([hSegs, hSpd, hItems, hIpd]);
                    float* w = null;
                    if (r.Weights is { } weights) { var hW = new Memory<float>(weights).Pin(); pins.Add(hW); w = (float*)hW.Pointer; }
                    batches[k] = new PimTableBatch
                    {
                        Table = (uint)q.TableId, NrBags = (uint)r.Bags, Segs = (PimHostSegment*)hSegs.Pointer, SegsPerDpu = (uint*)hSpd.Pointer,
                        Items = (uint*)hItems.Pointer, Weights = w, ItemsPerDpu = (uint*)hIpd.Pointer, Output = o + q.OutputStart,
                        OutputFloats = (ulong)floats,
                    };
                }
                fixed (PimTableBatch* b = batches)
                    Native.Check(Native.LookupTables(_handle, b, (uint)n), $"pim_lookup_tables ({n} tables)");
            }
        }
        finally
        {
            foreach (var h in pins) h.Dispose();
        }
    }

    /// <summary>Pushes the current values of <paramref name="rows"/> of table 0.</summary>
    public void UpdateRows(EmbeddingTable table, ReadOnlySpan<long> rows) => UpdateRows(0, table, rows);

    /// <summary>Pushes the current values of <paramref name="rows"/> (every replica, cache copy and pair sum that
    /// contains them) of table <paramref name="id"/> from <paramref name="table"/>, e.g. after LoRA adapters were merged
    /// into the weights: batched (one push and one launch per round) unless <paramref name="perSlot"/> (one transfer call
    /// per vector, the baseline the bench compares with). An int32 table whose rows outgrew its scale is reloaded.</summary>
    public void UpdateRows(int id, EmbeddingTable table, ReadOnlySpan<long> rows, bool perSlot = false)
    {
        var placed = Require(id);
        var plan = placed.Plan;
        RequireFp32(table);
        if (table.Rows != plan.Rows || table.Dim != plan.Dim)
            throw new ArgumentException($"table '{table.Name}' ({table.Rows} x {table.Dim}) is not the loaded {plan.Rows} x {plan.Dim}");
        var writes = new List<PimSlotDesc>();
        var set = new HashSet<long>();
        foreach (long r in rows)
        {
            if ((ulong)r >= (ulong)plan.Rows) throw new ArgumentOutOfRangeException(nameof(rows), r, $"table '{table.Name}': row {r} outside [0, {plan.Rows})");
            set.Add(r);
        }
        var pairsDone = new HashSet<int>();
        foreach (long r in set)
        {
            for (int q = 0; q < plan.Copies; q++)
                for (int x = plan.ReplicaStart[r]; x < plan.ReplicaStart[r + 1]; x++)
                    for (int t = 0; t < plan.Tiles; t++)
                        writes.Add(new PimSlotDesc(r, -1, (uint)t, (uint)plan.DpuOf(plan.ReplicaMember[x], t, q), (uint)plan.ReplicaSlot[x]));
            if (plan.CacheOrdinal[r] is int c and >= 0)
                for (int t = 0; t < plan.Tiles; t++)
                    writes.Add(new PimSlotDesc(r, -1, (uint)t, Native.AllDpus, (uint)(c * plan.Tiles + t)));
            if (plan.PairIndex.TryGetValue(r, out var partners))
                foreach (var (_, p) in partners)
                {
                    if (!pairsDone.Add(p)) continue;   // both rows of a pair changed: one write (a launch never names a slot twice)
                    var (a, b, k, s) = plan.Pairs[p];
                    for (int q = 0; q < plan.Copies; q++)
                        for (int t = 0; t < plan.Tiles; t++) writes.Add(new PimSlotDesc(a, b, (uint)t, (uint)plan.DpuOf(k, t, q), (uint)s));
                }
        }
        var array = writes.ToArray();
        int status;
        fixed (PimSlotDesc* w = array)
            status = Native.UpdateRows(_handle, (uint)id, (float*)table.DataPointer, (ulong)table.Rows, (ulong)(table.RowStride / sizeof(float)),
                                       w, (uint)array.Length, perSlot ? Native.UpdatePerSlot : 0);
        if (status == Native.StatusRange)
        {
            // Nothing was sent; a reload picks a scale for the current values.
            RangeReloads++;
            Load(id, table, plan, placed.Precision);
            return;
        }
        if (status != Native.StatusOk && status is not (Native.StatusArgument or Native.StatusCapacity)) _tables[id] = null;
        Native.Check(status, $"pushing {set.Count} rows of '{table.Name}'");
    }

    /// <summary>The kernel's cycle counter of the last launch, largest over the DPUs: measured with perfcounter on
    /// hardware; on the emulation the model's DMA cycles only.</summary>
    public long KernelCycles()
    {
        Native.Check(Native.KernelCycles(_handle, out ulong cycles), "pim_kernel_cycles");
        return (long)cycles;
    }

    public PimStats Stats()
    {
        Native.Check(Native.Stats(_handle, out var s), "pim_stats");
        var backend = s.Backend switch { 1 => PimBackendKind.Hardware, 2 => PimBackendKind.Simulator, _ => PimBackendKind.Emulated };
        return new PimStats(backend,
                            (int)s.NrDpus, (long)s.Batches, (long)s.BytesToDpu, (long)s.BytesFromDpu, (long)s.Items, (long)s.CacheItems,
                            Ns(s.NsToDpu), Ns(s.NsKernel), Ns(s.NsFromDpu), Ns(s.NsHostReduce),
                            (long)s.Launches, (long)s.UpdateLaunches, (long)s.UpdatedVectors, Ns(s.NsUpdate));
        static TimeSpan Ns(ulong ns) => TimeSpan.FromTicks((long)(ns / 100));
    }

    Placed Require(int id)
    {
        CheckId(id);
        return _tables[id] ?? throw new InvalidOperationException(id == 0 ? "no table is loaded on this PIM device" : $"table {id} is not loaded on this PIM device");
    }

    static void CheckId(int id)
    {
        if ((uint)id >= PimLayout.MaxTables) throw new ArgumentOutOfRangeException(nameof(id), id, $"a DPU set holds tables 0..{PimLayout.MaxTables - 1}");
    }

    static void RequireFp32(EmbeddingTable table)
    {
        if (table.Storage != EmbeddingStorage.Fp32)
            throw new NotSupportedException($"table '{table.Name}' is stored as {table.Storage}; the PIM kernel sums fp32 rows (store the table as Fp32 for PIM)");
        if (table.RowStride % sizeof(float) != 0)
            throw new NotSupportedException($"table '{table.Name}': row stride {table.RowStride} B is not a whole number of floats");
    }

    public void Dispose() => _handle.Dispose();
}
