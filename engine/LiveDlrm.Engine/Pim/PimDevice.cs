using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using Native = LiveDlrm.Interop.Pim;

namespace LiveDlrm.Pim;

/// <summary>Which UPMEM runtime serves lookups. <see cref="Auto"/>: real DPUs when the library was built against the SDK
/// and DPUs can be allocated, else the SDK's simulator (SDK build) or the project's emulation (emulated build).</summary>
public enum PimBackendKind { Auto, Hardware, Simulator, Emulated }

/// <summary>Cumulative counters of one device (one DPU set).</summary>
public readonly record struct PimStats(PimBackendKind Backend, int Dpus, long Batches, long BytesToDpu, long BytesFromDpu, long Items,
                                       long CacheItems, TimeSpan ToDpu, TimeSpan Kernel, TimeSpan FromDpu, TimeSpan HostReduce);

/// <summary>One DPU set holding one table according to a <see cref="PimPlan"/>: loads it, serves batches, pushes
/// changed rows. Not thread-safe (one caller at a time; <see cref="PimEmbeddingBackend"/> locks).</summary>
public sealed unsafe class PimDevice : IDisposable
{
    readonly PimContextHandle _handle;
    PimPlan? _plan;
    PimRouter? _router;
    PimRoutedBatch? _routed;

    public PimBackendKind Backend { get; }
    public int DpuCount { get; }
    public PimPlan? Plan => _plan;
    /// <summary>The native context, for tests that drive the C ABI directly.</summary>
    internal PimContextHandle Handle => _handle;

    PimDevice(PimContextHandle handle, PimBackendKind backend, int dpus) { _handle = handle; Backend = backend; DpuCount = dpus; }

    /// <summary>True when liblivedlrm_pim could be loaded.</summary>
    public static bool IsAvailable => NativeLibraries.IsAvailable(Libraries.Pim);
    /// <summary>True when the native library was built against the UPMEM SDK (else: the emulation).</summary>
    public static bool BuiltWithSdk => RequireLibrary() && Native.BuildKind() == 1;
    public static int MaxDpus => RequireLibrary() ? (int)Math.Min(int.MaxValue, Native.MaxDpus()) : 0;

    static bool RequireLibrary() => IsAvailable ? true
        : throw new DllNotFoundException("liblivedlrm_pim.so not found (build native/ with ./build.sh build; it is copied next to the app)");

    /// <summary>Allocates <paramref name="dpus"/> DPUs of the chosen backend and loads the kernel
    /// (<paramref name="kernelPath"/> null: the one next to the library). <paramref name="log"/> hears the choice.</summary>
    public static PimDevice Open(int dpus, PimBackendKind kind = PimBackendKind.Auto, string? kernelPath = null, Action<string>? log = null)
    {
        RequireLibrary();
        if (dpus <= 0) throw new ArgumentOutOfRangeException(nameof(dpus), dpus, "at least one DPU");
        bool sdk = Native.BuildKind() == 1;
        if (!sdk && dpus > Native.MaxDpus())
            throw new ArgumentOutOfRangeException(nameof(dpus), dpus, $"the emulation allows at most {Native.MaxDpus()} DPUs per process");
        PimBackendKind[] attempts = kind switch
        {
            PimBackendKind.Auto => sdk ? [PimBackendKind.Hardware, PimBackendKind.Simulator] : [PimBackendKind.Emulated],
            _ => [kind],
        };
        if (!sdk && kind is PimBackendKind.Hardware or PimBackendKind.Simulator)
            throw new PimException(Native.StatusDpu, $"PIM backend {kind} requested, but liblivedlrm_pim was built against the project's emulation " +
                                                  "(the UPMEM SDK was not found at build time); use Emulated or Auto");
        if (sdk && kind == PimBackendKind.Emulated)
            throw new PimException(Native.StatusDpu, "PIM backend Emulated requested, but liblivedlrm_pim was built against the UPMEM SDK " +
                                                  "(rebuild native/ with -DLIVEDLRM_PIM_FORCE_EMULATION=ON for the emulation)");
        Exception? last = null;
        foreach (var attempt in attempts)
        {
            string profile = attempt switch { PimBackendKind.Simulator => "backend=simulator", PimBackendKind.Emulated => "backend=emulated", _ => "" };
            int status = Native.Open((uint)dpus, profile, kernelPath, out var handle);
            if (status == Native.StatusOk)
            {
                log?.Invoke($"pim: {dpus} DPUs on backend {attempt}{(kind == PimBackendKind.Auto ? " (auto)" : "")}");
                return new PimDevice(handle, attempt, dpus);
            }
            handle.Dispose();
            try { Native.Check(status, $"pim_open({dpus} DPUs, backend {attempt})"); }
            catch (Exception e) when (kind == PimBackendKind.Auto && attempt != attempts[^1]) { last = e; log?.Invoke($"pim: backend {attempt} unavailable: {e.Message}"); }
        }
        throw last ?? new InvalidOperationException("unreachable");
    }

    /// <summary>Loads <paramref name="table"/> (fp32) as <paramref name="plan"/> places it. Fails before any transfer on
    /// bad input; a failed transfer leaves the device without a table.</summary>
    public void Load(EmbeddingTable table, PimPlan plan)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(plan);
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
            status = Native.LoadTable(_handle, (float*)table.DataPointer, (ulong)table.Rows, (uint)table.Dim, (ulong)(table.RowStride / sizeof(float)),
                                      (uint)plan.SliceFloats, s, per, cp, (uint)cache.Length);
        // Rejected input leaves the previous table on the DPUs (the shim validates before transferring); any other
        // failure happened mid-transfer, and the shim has dropped its table.
        if (status is not (Native.StatusOk or Native.StatusArgument or Native.StatusCapacity)) { _plan = null; _router = null; }
        Native.Check(status, $"loading table '{table.Name}' onto {DpuCount} DPUs");
        _plan = plan;
        _router = new PimRouter(plan);
    }

    /// <summary>Σ of each bag's rows (Σ weight·row when <paramref name="weights"/>, one per index, are given) into
    /// <paramref name="output"/> (bags × dim). The batch must already be validated against the table.</summary>
    public void LookupSum(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output, ReadOnlySpan<float> weights = default)
    {
        var plan = _plan ?? throw new InvalidOperationException("no table is loaded on this PIM device");
        _routed = _router!.Route(indices, offsets, _routed, weights);
        var r = _routed;
        fixed (PimHostSegment* segs = r.Segments)
        fixed (uint* spd = r.SegmentsPerDpu)
        fixed (uint* items = r.Items)
        fixed (float* w = r.Weights)
        fixed (uint* ipd = r.ItemsPerDpu)
        fixed (float* o = output)
            Native.Check(Native.Lookup(_handle, segs, spd, items, w, ipd, (uint)r.Bags, o, (ulong)output.Length), "pim_lookup");
    }

    /// <summary>Pushes the current values of <paramref name="rows"/> (every replica, cache copy and pair sum that
    /// contains them) from <paramref name="table"/>, e.g. after LoRA adapters were merged into the weights.</summary>
    public void UpdateRows(EmbeddingTable table, ReadOnlySpan<long> rows)
    {
        var plan = _plan ?? throw new InvalidOperationException("no table is loaded on this PIM device");
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
        foreach (long r in set)
        {
            for (int x = plan.ReplicaStart[r]; x < plan.ReplicaStart[r + 1]; x++)
                for (int t = 0; t < plan.Tiles; t++)
                    writes.Add(new PimSlotDesc(r, -1, (uint)t, (uint)plan.DpuOf(plan.ReplicaMember[x], t), (uint)plan.ReplicaSlot[x]));
            if (plan.CacheOrdinal[r] is int c and >= 0)
                for (int t = 0; t < plan.Tiles; t++)
                    writes.Add(new PimSlotDesc(r, -1, (uint)t, Native.AllDpus, (uint)(c * plan.Tiles + t)));
            if (plan.PairIndex.TryGetValue(r, out var partners))
                foreach (var (_, p) in partners)
                {
                    var (a, b, k, s) = plan.Pairs[p];
                    for (int t = 0; t < plan.Tiles; t++) writes.Add(new PimSlotDesc(a, b, (uint)t, (uint)plan.DpuOf(k, t), (uint)s));
                }
        }
        var array = writes.ToArray();
        fixed (PimSlotDesc* w = array)
            Native.Check(Native.UpdateRows(_handle, (float*)table.DataPointer, (ulong)table.Rows, (ulong)(table.RowStride / sizeof(float)), w, (uint)array.Length),
                      $"pushing {set.Count} rows of '{table.Name}'");
    }

    public PimStats Stats()
    {
        Native.Check(Native.Stats(_handle, out var s), "pim_stats");
        var backend = s.Backend switch { 1 => PimBackendKind.Hardware, 2 => PimBackendKind.Simulator, _ => PimBackendKind.Emulated };
        return new PimStats(backend,
                            (int)s.NrDpus, (long)s.Batches, (long)s.BytesToDpu, (long)s.BytesFromDpu, (long)s.Items, (long)s.CacheItems,
                            Ns(s.NsToDpu), Ns(s.NsKernel), Ns(s.NsFromDpu), Ns(s.NsHostReduce));
        static TimeSpan Ns(ulong ns) => TimeSpan.FromTicks((long)(ns / 100));
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
