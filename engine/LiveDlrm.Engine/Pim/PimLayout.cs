namespace LiveDlrm.Pim;

/// <summary>The per-DPU layout constants of native/pim/common/pim_common.h, mirrored for planning without the
/// native library (PimStructLayoutTests checks they equal the C values).</summary>
internal static class PimLayout
{
    /// <summary>MRAM bytes per DPU for stored vectors (the rest of the 64 MB holds batch input and output).</summary>
    public const long MramTableBytes = 56L << 20;
    public const long MramInBytes = 4L << 20;
    public const long MramOutBytes = 3L << 20;
    /// <summary>Widest stored vector: one mram_read per lookup and the tasklet buffers fit WRAM.</summary>
    public const int MaxSliceFloats = 128;
    /// <summary>WRAM bytes for hot vectors replicated into every DPU.</summary>
    public const int WramCacheBytes = 24 << 10;
    /// <summary>Items the kernel fetches per mram_read of an item list.</summary>
    public const int ItemChunk = 64;
    public const int BatchHeaderBytes = 16;
    /// <summary>A DPU-side segment: item range, table id, output offset.</summary>
    public const int SegmentBytes = 16;
    /// <summary>Tables one DPU set holds (one launch serves them all).</summary>
    public const int MaxTables = 32;
    /// <summary>int32 tables: stored |q| ≤ 2^IntBits; a DPU partial sums at most IntSegmentItems items.</summary>
    public const int IntBits = 23;
    public const int IntSegmentItems = 127;
    public const uint ItemCacheBit = 0x80000000u;
}
