using System.Runtime.InteropServices;
using LiveDlrm.Interop;

namespace LiveDlrm.Memory;

/// <summary>A block of native, 64-byte aligned memory (cache-line aligned, so SIMD row loads never split a line
/// at the table's start, and no 2 GiB managed-array limit). Freed exactly once by the SafeHandle machinery,
/// also when the owner forgets to Dispose.
/// <para>Large blocks (≥ <see cref="HugePageThreshold"/>) on Linux are their own anonymous mapping, 2 MiB aligned
/// and marked MADV_HUGEPAGE before first touch: random row gathers over a table of a GiB miss the TLB on nearly
/// every row with 4 KiB pages, and with THP in "madvise" mode only marked ranges get 2 MiB pages (docs/kernels.md,
/// "Huge pages").</para></summary>
internal sealed unsafe class NativeBuffer : SafeHandle
{
    public const int Alignment = 64;
    /// <summary>Blocks from this size up are mapped with the huge-page hint.</summary>
    public const long HugePageThreshold = 4L << 20;
    const long HugePageSize = 2L << 20;

    static long _liveBytes, _liveCount, _totalAllocations;

    /// <summary>Bytes currently allocated through this type in the process (for leak tests and `info`).</summary>
    public static long LiveBytes => Interlocked.Read(ref _liveBytes);
    public static long LiveCount => Interlocked.Read(ref _liveCount);
    public static long TotalAllocations => Interlocked.Read(ref _totalAllocations);

    /// <summary>Whether new large blocks get the huge-page mapping (default on, Linux only). A switch for measuring
    /// its effect; existing blocks keep the way they were allocated.</summary>
    public static bool UseHugePages { get; set; } = true;

    public long Length { get; }

    /// <summary>True when this block is a 2 MiB-aligned mapping marked MADV_HUGEPAGE (the kernel may still back
    /// parts of it with small pages when huge ones are short).</summary>
    public bool HugePagesAdvised { get; private set; }

    /// <summary>Length of the mmap'ed region (0 when the block came from the C heap).</summary>
    nuint _mappedLength;

    NativeBuffer(long length) : base(0, ownsHandle: true)
    {
        Length = length;
    }

    /// <summary>Allocates <paramref name="length"/> bytes (at least one), zero-filled.</summary>
    public static NativeBuffer Allocate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        var buffer = new NativeBuffer(length);
        if (!(UseHugePages && length >= HugePageThreshold && OperatingSystem.IsLinux() && buffer.TryMapHuge(length)))
        {
            nuint size = (nuint)Math.Max(length, 1);
            void* p = NativeMemory.AlignedAlloc(size, Alignment);
            if (p == null) throw new OutOfMemoryException($"native allocation of {length} bytes failed");
            NativeMemory.Clear(p, size);
            buffer.SetHandle((nint)p);
        }
        Interlocked.Add(ref _liveBytes, length);
        Interlocked.Increment(ref _liveCount);
        Interlocked.Increment(ref _totalAllocations);
        return buffer;
    }

    /// <summary>Maps length rounded up to 2 MiB at a 2 MiB boundary (over-map by one huge page, unmap the slack),
    /// then advises huge pages. Anonymous mappings are zero-filled by the kernel, so nothing is touched here and the
    /// first writes fault in huge pages. False (nothing kept) if any step fails, and the caller uses the C heap.</summary>
    bool TryMapHuge(long length)
    {
        nuint size = (nuint)((length + HugePageSize - 1) & ~(HugePageSize - 1));
        nuint over = size + (nuint)HugePageSize;
        nint raw = MemoryInterop.MMap(0, over, MemoryInterop.ProtRead | MemoryInterop.ProtWrite,
                                      MemoryInterop.MapPrivate | MemoryInterop.MapAnonymous, -1, 0);
        if (raw == MemoryInterop.MapFailed) return false;
        nint aligned = (nint)(((long)raw + HugePageSize - 1) & ~(HugePageSize - 1));
        nuint head = (nuint)(aligned - raw), tail = over - head - size;
        if (head > 0) MemoryInterop.MUnmap(raw, head);
        if (tail > 0) MemoryInterop.MUnmap(aligned + (nint)size, tail);
        // Failure to advise (THP compiled out / "never") still leaves a valid, zeroed mapping.
        HugePagesAdvised = MemoryInterop.MAdvise(aligned, size, MemoryInterop.MadvHugePage) == 0;
        _mappedLength = size;
        SetHandle(aligned);
        return true;
    }

    public byte* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return (byte*)handle;
        }
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        if (_mappedLength != 0) MemoryInterop.MUnmap(handle, _mappedLength);
        else NativeMemory.AlignedFree((void*)handle);
        Interlocked.Add(ref _liveBytes, -Length);
        Interlocked.Decrement(ref _liveCount);
        return true;
    }
}
