using LiveDlrm.Interop;

namespace LiveDlrm.Files;

/// <summary>
/// Checks of a command's output paths, done before any work starts so a bad path fails in a moment, not after a
/// training pass. Paths are compared by identity (device + inode, after following links), so a relative path,
/// a symlink or a hard link to an input is still recognised as that input.
/// </summary>
internal static class OutputTarget
{
    /// <summary>An output file: its folder exists and is writable; the path is not a directory or a device, not an
    /// input of the command, and not inside a LiveDlrm checkpoint. Returns the absolute path.</summary>
    public static string CheckFile(string option, string path, IEnumerable<string>? inputs = null)
    {
        string full = Absolute(option, path);
        CheckParent(option, full);
        var stat = FileStatusInterop.Stat(full);
        if (stat.Kind == FileKind.Directory) throw new OutputException(option, $"'{path}' is a directory; give a file path");
        if (stat.Kind == FileKind.Other) throw new OutputException(option, $"'{path}' is not a regular file (a device, FIFO or socket)");
        CheckNotInput(option, path, full, inputs);
        if (InsideCheckpoint(Path.GetDirectoryName(full)!) is { } checkpoint)
            throw new OutputException(option, $"'{path}' is inside the checkpoint {checkpoint}; write it elsewhere");
        return full;
    }

    /// <summary>An output directory that receives named files (reports, plots): absent with an existing writable
    /// parent, or an existing writable directory; not a file, not inside a checkpoint. Returns the absolute path.</summary>
    public static string CheckDirectory(string option, string path)
    {
        string full = Absolute(option, path);
        var stat = FileStatusInterop.Stat(full);
        if (stat.Kind == FileKind.Missing) CheckParent(option, full);
        else if (stat.Kind != FileKind.Directory) throw new OutputException(option, $"'{path}' exists and is not a directory");
        else if (!FileRenameInterop.IsWritable(full)) throw new OutputException(option, $"directory '{path}' is not writable");
        if (InsideCheckpoint(full) is { } checkpoint)
            throw new OutputException(option, $"'{path}' is inside the checkpoint {checkpoint}; write it elsewhere");
        return full;
    }

    /// <summary>Writes a file through a temporary sibling renamed over <paramref name="path"/>: a failure part-way
    /// leaves the previous file (or none), never half of one.</summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, TempOwner.Name(Path.GetFileName(full), "tmp"));
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { /* nothing more to do; the target is untouched */ }
            throw;
        }
    }

    internal static string Absolute(string option, string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new OutputException(option, "empty path");
        if (path.Contains('\0')) throw new OutputException(option, "the path contains a NUL character");
        string full = Path.GetFullPath(path);
        return full.Length > 1 ? full.TrimEnd(Path.DirectorySeparatorChar) : full;
    }

    static void CheckParent(string option, string full)
    {
        string? parent = Path.GetDirectoryName(full);
        if (parent is null) throw new OutputException(option, "the root directory cannot be an output");
        var stat = FileStatusInterop.Stat(parent);
        if (stat.Kind == FileKind.Missing) throw new OutputException(option, $"folder '{parent}' does not exist");
        if (stat.Kind != FileKind.Directory) throw new OutputException(option, $"'{parent}' is not a directory");
        if (!FileRenameInterop.IsWritable(parent)) throw new OutputException(option, $"folder '{parent}' is not writable");
    }

    /// <summary>Refuses <paramref name="full"/> when it is one of <paramref name="inputs"/> or a directory that
    /// contains one.</summary>
    internal static void CheckNotInput(string option, string given, string full, IEnumerable<string>? inputs)
    {
        if (inputs is null) return;
        var output = FileStatusInterop.Stat(full);
        foreach (string input in inputs)
        {
            if (string.IsNullOrEmpty(input)) continue;
            string inputFull = Path.GetFullPath(input);
            if (output.Kind != FileKind.Missing && SameObject(output, FileStatusInterop.Stat(inputFull)))
                throw new OutputException(option, $"'{given}' is an input of this command ({input}); choose another path");
            if (IsAncestor(full, inputFull))
                throw new OutputException(option, $"'{given}' contains an input of this command ({input}); choose another path");
        }
    }

    /// <summary>True when directory <paramref name="dir"/> is <paramref name="path"/> or one of its ancestors, by
    /// identity (each of <paramref name="path"/>'s real parents compared with <paramref name="dir"/>).</summary>
    public static bool IsAncestor(string dir, string path)
    {
        var d = FileStatusInterop.Stat(dir);
        if (d.Kind != FileKind.Directory) return false;
        string? p = RealPath(path);
        for (; p is not null; p = Path.GetDirectoryName(p))
            if (SameObject(d, FileStatusInterop.Stat(p))) return true;
        return false;
    }

    static bool SameObject(FileStat a, FileStat b) =>
        a.Kind != FileKind.Missing && b.Kind != FileKind.Missing && a.Device == b.Device && a.Inode == b.Inode;

    /// <summary>The path with every symlink resolved (for the parts that exist).</summary>
    internal static string? RealPath(string path)
    {
        string full = Path.GetFullPath(path);
        try
        {
            var info = new FileInfo(full);
            if (info.LinkTarget is not null)
                return info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full;
        }
        catch (IOException) { /* a link loop: compare as given */ }
        return full;
    }

    /// <summary>The checkpoint directory <paramref name="dir"/> is or lies in, if any (it has a manifest checksum file).</summary>
    internal static string? InsideCheckpoint(string dir)
    {
        for (string? p = dir; p is not null; p = Path.GetDirectoryName(p))
            if (File.Exists(Path.Combine(p, Checkpoints.Checkpoint.ManifestChecksumFile)) && File.Exists(Path.Combine(p, Checkpoints.Checkpoint.ManifestFile))) return p;
        return null;
    }
}
