using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>fsync of a directory, which .NET cannot open as a file: after files are created or renamed, the
/// directory entry itself must reach the disk for the new names to survive a crash (checkpoints rely on it).</summary>
internal static partial class FileSyncInterop
{
    const int ORdOnly = 0, ODirectory = 0x10000, OCloExec = 0x80000;

    [LibraryImport(Libraries.LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport(Libraries.LibC, EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);

    [LibraryImport(Libraries.LibC, EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    /// <summary>Flushes the directory <paramref name="path"/> to disk; throws IOException naming it on failure.</summary>
    public static void SyncDirectory(string path)
    {
        int fd = Open(path, ORdOnly | ODirectory | OCloExec);
        if (fd < 0) throw new IOException($"{path}: cannot open directory for fsync (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (FSync(fd) != 0) throw new IOException($"{path}: fsync of the directory failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            Close(fd);
        }
    }
}
