using LiveDlrm.Interop;

namespace LiveDlrm.Checkpoints;

/// <summary>
/// The filesystem steps of a checkpoint save and recovery, as a seam: the real implementation calls the OS; the
/// fault-injection tests substitute one that crashes (every later step fails too, like kill -9) or fails one step
/// with ENOSPC/EIO, between any two steps.
/// </summary>
internal class CheckpointFileSystem
{
    public static readonly CheckpointFileSystem Real = new();

    public virtual void CreateDirectory(string path) => Directory.CreateDirectory(path);
    public virtual Stream CreateFile(string path) =>
        new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.None);
    /// <summary>Flushes a file written through <see cref="CreateFile"/> to disk.</summary>
    public virtual void SyncFile(Stream stream) => ((FileStream)stream).Flush(flushToDisk: true);
    public virtual void SyncDirectory(string path) => FileSyncInterop.SyncDirectory(path);
    /// <summary>Renames directory <paramref name="from"/> to the absent <paramref name="to"/>.</summary>
    public virtual void Move(string from, string to) => Directory.Move(from, to);
    /// <summary>Swaps two directories in one step; false when the filesystem cannot.</summary>
    public virtual bool TryExchange(string a, string b) => FileRenameInterop.TryExchange(a, b);
    public virtual void DeleteDirectory(string path) => Directory.Delete(path, recursive: true);
}
