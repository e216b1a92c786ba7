using System.Runtime.InteropServices;
using System.Runtime.InteropServices.Marshalling;
using Microsoft.Win32.SafeHandles;

namespace LiveDlrm.Interop;

/// <summary>Bindings for liblivedlrm_pim (native/pim/host/pim_host.c), the UPMEM shim built over the real SDK or
/// the project's emulation. Every call returns 0 or a negative status with the reason in <c>pim_last_error()</c>
/// (thread-local); <see cref="Check"/> turns that into an exception once, here. The structs mirror
/// native/pim/common/pim_common.h; PimStructLayoutTests compares them with <c>pim_struct_layout</c>.</summary>
internal static unsafe partial class Pim
{
    internal const int StatusOk = 0, StatusArgument = -1, StatusDpu = -2, StatusState = -3, StatusMemory = -4, StatusCapacity = -5, StatusRange = -6;
    internal const uint ItemCacheBit = 0x80000000u;
    internal const uint AllDpus = 0xFFFFFFFFu;
    internal const uint FormatFp32 = 0, FormatInt32 = 1;
    internal const uint UpdatePerSlot = 1;

    /// <summary>int pim_open(uint32_t nr_dpus, const char *profile, const char *kernel_path, struct pim_ctx **out)
    /// — kernel_path NULL: livedlrm_pim_kernel.dpu next to the library.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_open", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(uint nrDpus, string? profile, string? kernelPath, out PimContextHandle context);

    /// <summary>void pim_close(struct pim_ctx *ctx) — frees the DPUs; called only by <see cref="PimContextHandle"/>.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_close")]
    internal static partial void Close(nint context);

    /// <summary>int pim_load_table(struct pim_ctx *, uint32_t id, const float *table, uint64_t rows, uint32_t dim,
    /// uint64_t row_stride_floats, uint32_t slice_floats, uint32_t format, const pim_slot_desc *slots, const uint32_t *slots_per_dpu,
    /// const pim_slot_desc *cache, uint32_t nr_cache) — table <paramref name="id"/> of the set; slots: DPU 0's stored vectors,
    /// then DPU 1's, ...; validated in full before the first transfer; the set's other tables keep serving.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_load_table")]
    internal static partial int LoadTable(PimContextHandle context, uint id, float* table, ulong rows, uint dim, ulong rowStrideFloats,
                                          uint sliceFloats, uint format, PimSlotDesc* slots, uint* slotsPerDpu, PimSlotDesc* cache, uint nrCache);

    /// <summary>int pim_table_scale(const struct pim_ctx *, uint32_t id, double *scale) — int32 tables: value = q · scale.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_table_scale")]
    internal static partial int TableScale(PimContextHandle context, uint id, out double scale);

    /// <summary>int pim_update_rows(struct pim_ctx *, uint32_t id, const float *table, uint64_t rows, uint64_t row_stride_floats,
    /// const pim_slot_desc *writes, uint32_t nr_writes, uint32_t flags) — each write names its DPU and slot (or AllDpus and a
    /// cache index); flags 0: batched rounds (push + launch), <see cref="UpdatePerSlot"/>: one transfer per vector.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_update_rows")]
    internal static partial int UpdateRows(PimContextHandle context, uint id, float* table, ulong rows, ulong rowStrideFloats,
                                           PimSlotDesc* writes, uint nrWrites, uint flags);

    /// <summary>int pim_lookup_tables(struct pim_ctx *, const pim_table_batch *batches, uint32_t nr_batches) — one push,
    /// one launch and one pull for every table's batch; each output overwritten with its sums.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_lookup_tables")]
    internal static partial int LookupTables(PimContextHandle context, PimTableBatch* batches, uint nrBatches);

    /// <summary>int pim_kernel_cycles(struct pim_ctx *, uint64_t *max_cycles) — the kernel's cycle counter of the last
    /// launch, largest over the DPUs (perfcounter on hardware, the model's DMA cycles on the emulation).</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_kernel_cycles")]
    internal static partial int KernelCycles(PimContextHandle context, out ulong maxCycles);

    /// <summary>int pim_stats(const struct pim_ctx *, pim_stats_t *out)</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_stats")]
    internal static partial int Stats(PimContextHandle context, out PimNativeStats stats);

    /// <summary>const char *pim_last_error(void) — thread-local, valid until the next call on this thread.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_last_error")]
    internal static partial nint LastErrorPointer();

    /// <summary>int pim_struct_layout(int64_t *values, int32_t capacity) — returns how many values it has.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_struct_layout")]
    internal static partial int StructLayout(long* values, int capacity);

    /// <summary>int pim_build_kind(void) — 0: built against the emulation, 1: against the UPMEM SDK.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_build_kind")]
    internal static partial int BuildKind();

    /// <summary>uint32_t pim_max_dpus(void) — most DPUs this build can hold (the emulation's process limit).</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_max_dpus")]
    internal static partial uint MaxDpus();

    /// <summary>int pim_run_probe(const char *kernel_path, const char *profile, const pim_probe_args *args) — test kernels.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_run_probe", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RunProbe(string kernelPath, string? profile, PimProbeArgs* args);

    /// <summary>int pim_run_kernel(const char *kernel_path, const char *profile) — loads and launches a test kernel on one DPU.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_run_kernel", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RunKernel(string kernelPath, string? profile);

    /// <summary>int pim_run_race_probe(const char *kernel_path, const char *profile, uint32_t guarded, uint32_t *count) — test kernel.</summary>
    [LibraryImport(Libraries.Pim, EntryPoint = "pim_run_race_probe", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RunRaceProbe(string kernelPath, string? profile, uint guarded, out uint count);

    internal static string LastError => Marshal.PtrToStringUTF8(LastErrorPointer()) ?? "";

    /// <summary>Throws for a failed status: bad input and capacity → <see cref="ArgumentException"/>, no table →
    /// <see cref="InvalidOperationException"/>, a runtime/DPU error → <see cref="PimException"/>.</summary>
    internal static void Check(int status, string what)
    {
        if (status == StatusOk) return;
        string message = $"{what}: {LastError}";
        throw status switch
        {
            StatusArgument or StatusCapacity or StatusRange => new ArgumentException(message),
            StatusState => new InvalidOperationException(message),
            StatusMemory => new OutOfMemoryException(message),
            _ => new PimException(status, message),
        };
    }
}

/// <summary>An error reported by the UPMEM runtime or the emulation (allocation, program load, DPU fault...).</summary>
internal sealed class PimException(int status, string message) : Exception(message)
{
    public int Status { get; } = status;
}

/// <summary>Owns one pim_ctx (an allocated DPU set with the kernel loaded).</summary>
internal sealed class PimContextHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public PimContextHandle() : base(ownsHandle: true) { }
    protected override bool ReleaseHandle() { Pim.Close(handle); return true; }
}

/// <summary>pim_table_args (per table and DPU, in each DPU's WRAM).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimTableArgs { public uint SliceFloats, SlotBytes, NrSlots, NrCache, SlotBase, CacheBase, Format, Reserved; }

/// <summary>pim_batch_header (first 16 bytes of a DPU's launch input).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimBatchHeader { public uint Mode, NrSegments, ItemsOffset, WeightsOffset; }

/// <summary>pim_segment (DPU side: one partial sum over items[ItemBegin, +ItemCount) of table Table, at OutOffset).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimSegment { public uint ItemBegin, ItemCount, Table, OutOffset; }

/// <summary>pim_update (DPU side: one stored vector to rewrite).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimUpdate { public uint Table, Slot, VectorOffset, Reserved; }

/// <summary>pim_table_batch: one table's share of a multi-table lookup (pointers pinned by the caller).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PimTableBatch
{
    public uint Table, NrBags;
    public PimHostSegment* Segs;
    public uint* SegsPerDpu;
    public uint* Items;
    public float* Weights;
    public uint* ItemsPerDpu;
    public float* Output;
    public ulong OutputFloats;
}

/// <summary>pim_host_segment: a DPU's share of one bag in one column tile.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimHostSegment
{
    public uint Bag, Tile, ItemBegin, ItemCount;
    public PimHostSegment(uint bag, uint tile, uint itemBegin, uint itemCount) { Bag = bag; Tile = tile; ItemBegin = itemBegin; ItemCount = itemCount; }
}

/// <summary>pim_slot_desc: a stored vector (row, or pair sum RowA + RowB when RowB ≥ 0, in column tile Tile).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimSlotDesc
{
    public long RowA, RowB;
    public uint Tile, Dpu, Slot, Reserved;
    public PimSlotDesc(long rowA, long rowB, uint tile, uint dpu = 0, uint slot = 0) { RowA = rowA; RowB = rowB; Tile = tile; Dpu = dpu; Slot = slot; Reserved = 0; }
}

/// <summary>pim_stats_t: cumulative counters of one context.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimNativeStats
{
    public ulong Batches, Launches, BytesToDpu, BytesFromDpu, Items, CacheItems, NsToDpu, NsKernel, NsFromDpu, NsHostReduce;
    public ulong UpdateLaunches, UpdatedVectors, NsUpdate;
    public uint NrDpus, Backend;
}

/// <summary>pim_probe_args: the one DMA the probe kernel performs.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PimProbeArgs { public uint Write, Size, MramOffset, WramOffset; }
