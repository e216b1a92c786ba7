using System.Runtime.CompilerServices;

namespace LiveDlrm.Lora;

/// <summary>Raw view of one pinned adapter generation for the kernels (pointers only, so it can sit on the caller's
/// stack and be reached through <see cref="Embeddings.BagJob.Context"/> from the pool's workers).</summary>
internal unsafe struct LoraContext
{
    public long* Map;
    public long MapMask;
    public int MapShift;
    /// <summary>The A array (slot × <see cref="AStride"/> bytes) and the slot records.</summary>
    public byte* A;
    public SlotRecord* Records;
    public uint* Filter;
    public int FilterShift;
    public int AStride;
    public int SlotCapacity;
    public int Rank;
    /// <summary>B snapshot, rank × dim row-major (a pinned managed array).</summary>
    public float* B;
    /// <summary>The generation's write epoch (see <see cref="AdapterGeneration.WriteEpochPointer"/>).</summary>
    public int* WriteEpoch;
    /// <summary>Null, or the slot of every index of the batch (-1: not adapted) given ahead by a benchmark
    /// (<see cref="LoraKnownSlots"/>): blocks then skip the filter and the map probes.</summary>
    public int* KnownSlots;
    /// <summary>Every bag takes the per-row path (<see cref="LoraKernelScopes.ForcePerRow"/>, read on the calling thread).</summary>
    public bool PerRowOnly;
    /// <summary>The block kernel sums W rows with the native kernel (<see cref="NativeBagKernel"/>), as the plain lookup
    /// of this storage type does (<see cref="EmbeddingKernels.ImplementationFor"/>, read on the calling thread).</summary>
    public bool NativeRows;
    /// <summary>Null, or two counters the block kernel adds its fast and redone blocks to
    /// (<see cref="LoraKernelScopes.CountBlocks"/>).</summary>
    public long* BlockCounts;
    /// <summary>The adapter writes hot rows straight into W (<see cref="AdapterOptions.HotRowFraction"/>): per-row paths
    /// validate their plain W reads against <see cref="WriteEpoch"/>.</summary>
    public bool ValidateW;

    /// <summary>The view of pinned generation <paramref name="g"/> with its B pinned at <paramref name="b"/>, with the
    /// calling thread's kernel overrides.</summary>
    public static LoraContext Of(AdapterGeneration g, float* b) => new()
    {
        Map = g.MapPointer, MapMask = g.MapCapacity - 1, MapShift = 64 - System.Numerics.BitOperations.Log2((ulong)g.MapCapacity),
        A = g.PoolPointer, Records = g.RecordPointer, AStride = g.AStride, SlotCapacity = g.SlotCapacity, Rank = g.Rank, B = b,
        Filter = g.FilterPointer, FilterShift = g.FilterShift, WriteEpoch = g.WriteEpochPointer,
        PerRowOnly = LoraKernelScopes.PerRowForced, BlockCounts = LoraKernelScopes.CurrentBlockCounts,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float* AOf(int slot) => (float*)(A + (long)slot * AStride);

    /// <summary>Slot of <paramref name="row"/> or -1: presence filter first, then the map (same probe as
    /// <see cref="AdapterGeneration.Find"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(long row) =>
        AdapterGeneration.MayContain(Filter, FilterShift, row) ? AdapterGeneration.ProbeMap(row, Map, MapShift) : -1;
}

/// <summary>Overrides of the LoRA lookup for tests and diagnostics, scoped to the calling thread (the lookups it starts,
/// including the pool work they fan out, carry them in their <see cref="LoraContext"/>): nothing process-wide, so
/// parallel tests and a serving process never see another caller's setting.</summary>
internal static unsafe class LoraKernelScopes
{
    [ThreadStatic] static bool t_perRow;
    [ThreadStatic] static BlockCounts? t_counts;

    public static bool PerRowForced => t_perRow;

    public static long* CurrentBlockCounts => t_counts is { } c ? c.Pointer : null;

    /// <summary>Lookups started on this thread serve every bag by the per-row path until disposed (the tests compare
    /// the two paths).</summary>
    public static IDisposable ForcePerRow()
    {
        bool previous = t_perRow;
        t_perRow = true;
        return new Restore(() => t_perRow = previous);
    }

    /// <summary>Counts the blocks that lookups started on this thread serve on the fast path and redo row by row,
    /// until disposed (the concurrency tests show that both paths ran under a live writer).</summary>
    public static BlockCounts CountBlocks()
    {
        var counts = new BlockCounts(t_counts);
        t_counts = counts;
        return counts;
    }

    public sealed class BlockCounts : IDisposable
    {
        readonly long[] _counts = GC.AllocateArray<long>(2, pinned: true);
        readonly BlockCounts? _previous;

        internal BlockCounts(BlockCounts? previous) => _previous = previous;

        internal long* Pointer => (long*)Unsafe.AsPointer(ref _counts[0]);

        /// <summary>Blocks served by the fast path (validated against the write epoch).</summary>
        public long Fast => Interlocked.Read(ref _counts[0]);
        /// <summary>Blocks redone row by row because the write epoch moved or was odd.</summary>
        public long Redone => Interlocked.Read(ref _counts[1]);

        public void Dispose() => t_counts = _previous;
    }

    sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}
