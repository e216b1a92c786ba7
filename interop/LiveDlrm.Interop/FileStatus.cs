using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>What kind of object a path names, as <c>stat</c> reports it (.NET's FileAttributes cannot tell a
/// regular file from a device or a FIFO).</summary>
internal enum FileKind { Missing, Regular, Directory, Symlink, Other }

/// <summary>Identity and kind of a file: two paths name the same object when device and inode agree.</summary>
internal readonly record struct FileStat(FileKind Kind, ulong Device, ulong Inode, long Size, long ModifiedNanoseconds);

/// <summary>statx(2): its buffer layout is the same on every Linux architecture, unlike struct stat's.</summary>
internal static unsafe partial class FileStatusInterop
{
    const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
    const uint StatxBasicStats = 0x7ff;
    const int SIfMt = 0xF000, SIfReg = 0x8000, SIfDir = 0x4000, SIfLnk = 0xA000;
    const int ENoEnt = 2, ENotDir = 20;

    // int statx(int dirfd, const char *pathname, int flags, unsigned int mask, struct statx *statxbuf);
    [LibraryImport(Libraries.LibC, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);

    /// <summary>The stat of <paramref name="path"/> (of the link itself when <paramref name="followLinks"/> is
    /// false); Kind Missing when nothing is there. Other errors (EACCES, ELOOP, ...) throw an IOException naming the path.</summary>
    public static FileStat Stat(string path, bool followLinks = true)
    {
        byte* b = stackalloc byte[256];
        if (Statx(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxBasicStats, b) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is ENoEnt or ENotDir) return new FileStat(FileKind.Missing, 0, 0, 0, 0);
            throw new IOException($"{path}: cannot stat ({Marshal.GetPInvokeErrorMessage(errno)})");
        }
        int mode = *(ushort*)(b + 28) & SIfMt;
        ulong inode = *(ulong*)(b + 32);
        long size = *(long*)(b + 40);
        long mtime = *(long*)(b + 112) * 1_000_000_000L + *(uint*)(b + 120);
        ulong device = (ulong)*(uint*)(b + 136) << 32 | *(uint*)(b + 140);
        var kind = mode switch { SIfReg => FileKind.Regular, SIfDir => FileKind.Directory, SIfLnk => FileKind.Symlink, _ => FileKind.Other };
        return new FileStat(kind, device, inode, size, mtime);
    }
}

/// <summary>renameat2(2) with RENAME_EXCHANGE (swap two paths in one step, so neither is ever missing) and
/// access(2) for a writability check before any work starts.</summary>
internal static partial class FileRenameInterop
{
    const int AtFdCwd = -100;
    const uint RenameExchange = 2;
    const int WOk = 2;
    const int EInval = 22, ENoSys = 38, EOpNotSupp = 95;

    // int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
    [LibraryImport(Libraries.LibC, EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt2(int oldDirFd, string oldPath, int newDirFd, string newPath, uint flags);

    // int access(const char *pathname, int mode);
    [LibraryImport(Libraries.LibC, EntryPoint = "access", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Access(string path, int mode);

    /// <summary>Atomically swaps <paramref name="a"/> and <paramref name="b"/>; false when the filesystem or kernel
    /// cannot (the caller falls back to two renames), IOException on any other failure.</summary>
    public static bool TryExchange(string a, string b)
    {
        if (RenameAt2(AtFdCwd, a, AtFdCwd, b, RenameExchange) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is EInval or ENoSys or EOpNotSupp) return false;
        throw new IOException($"{b}: cannot exchange with {a} ({Marshal.GetPInvokeErrorMessage(errno)})", errno);
    }

    /// <summary>True when this process may create entries in (or write) <paramref name="path"/>.</summary>
    public static bool IsWritable(string path) => Access(path, WOk) == 0;
}
