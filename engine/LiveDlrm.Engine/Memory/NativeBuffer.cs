using System.Runtime.InteropServices;

namespace LiveDlrm.Memory;

/// <summary>A block of native, 64-byte aligned memory (cache-line aligned, so SIMD row loads never split a line
/// at the table's start, and no 2 GiB managed-array limit). Freed exactly once by the SafeHandle machinery,
/// also when the owner forgets to Dispose.</summary>
public sealed unsafe class NativeBuffer : SafeHandle
{
    public const int Alignment = 64;
    static long _liveBytes, _liveCount, _totalAllocations;

    /// <summary>Bytes currently allocated through this type in the process (for leak tests and `info`).</summary>
    public static long LiveBytes => Interlocked.Read(ref _liveBytes);
    public static long LiveCount => Interlocked.Read(ref _liveCount);
    public static long TotalAllocations => Interlocked.Read(ref _totalAllocations);

    public long Length { get; }

    NativeBuffer(long length) : base(0, ownsHandle: true)
    {
        Length = length;
    }

    /// <summary>Allocates <paramref name="length"/> bytes (at least one), zero-filled.</summary>
    public static NativeBuffer Allocate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        var buffer = new NativeBuffer(length);
        nuint size = (nuint)Math.Max(length, 1);
        void* p = NativeMemory.AlignedAlloc(size, Alignment);
        if (p == null) throw new OutOfMemoryException($"native allocation of {length} bytes failed");
        NativeMemory.Clear(p, size);
        buffer.SetHandle((nint)p);
        Interlocked.Add(ref _liveBytes, length);
        Interlocked.Increment(ref _liveCount);
        Interlocked.Increment(ref _totalAllocations);
        return buffer;
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
        NativeMemory.AlignedFree((void*)handle);
        Interlocked.Add(ref _liveBytes, -Length);
        Interlocked.Decrement(ref _liveCount);
        return true;
    }
}
