using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>libc calls the embedding layer needs for its own memory and threads: anonymous mappings with a
/// transparent-huge-page hint for large tables, and the Linux thread id of a worker (for pinning / resctrl).
/// Kept apart from LibC.cs (the NUMA layer's bindings) so the two areas evolve independently.</summary>
internal static unsafe partial class MemoryInterop
{
    public const int ProtRead = 0x1, ProtWrite = 0x2;
    public const int MapPrivate = 0x02, MapAnonymous = 0x20;
    /// <summary>MADV_HUGEPAGE: back this range with 2 MiB pages where possible (THP "madvise" mode honours only
    /// ranges marked like this). Must be set before the pages are first touched to take effect at fault time.</summary>
    public const int MadvHugePage = 14;
    public static readonly nint MapFailed = -1;

    /// <summary>mmap(2). Returns <see cref="MapFailed"/> on error (errno via Marshal.GetLastPInvokeError).</summary>
    [LibraryImport(Libraries.LibC, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint MMap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport(Libraries.LibC, EntryPoint = "munmap", SetLastError = true)]
    public static partial int MUnmap(nint address, nuint length);

    [LibraryImport(Libraries.LibC, EntryPoint = "madvise", SetLastError = true)]
    public static partial int MAdvise(nint address, nuint length, int advice);

    /// <summary>gettid(2) (glibc ≥ 2.30): the kernel thread id, which is what sched_setaffinity and resctrl want;
    /// Environment.CurrentManagedThreadId is a managed counter, not a TID.</summary>
    [LibraryImport(Libraries.LibC, EntryPoint = "gettid")]
    public static partial int GetTid();
}
