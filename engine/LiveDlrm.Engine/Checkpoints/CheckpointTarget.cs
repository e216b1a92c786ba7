using LiveDlrm.Files;
using LiveDlrm.Interop;

namespace LiveDlrm.Checkpoints;

/// <summary>
/// Where a checkpoint may be written, checked before any work starts. A checkpoint directory is only ever replaced
/// by a checkpoint: the path must be absent, an empty directory, or an existing LiveDlrm checkpoint (a manifest
/// whose checksum verifies). Anything else is refused, unless <c>force</c> allows a non-empty directory that is not
/// a checkpoint — never the current directory, the root, or a directory holding an input of the command or the
/// current directory. A symlink is written through: the checkpoint goes to the link's final target, so the link
/// keeps pointing at the new checkpoint.
/// </summary>
internal static class CheckpointTarget
{
    /// <summary>Checks <paramref name="path"/> for a checkpoint output of a command whose inputs are
    /// <paramref name="inputs"/>; returns the directory to save into (the link target for a symlink).</summary>
    public static string Check(string option, string path, IEnumerable<string>? inputs = null, bool force = false)
    {
        string full = OutputTarget.Absolute(option, path);
        var own = FileStatusInterop.Stat(full, followLinks: false);
        if (own.Kind == FileKind.Symlink)
        {
            string? target = OutputTarget.RealPath(full);
            if (target is null || target == full) throw new OutputException(option, $"'{path}' is a symlink that cannot be resolved (a loop?)");
            full = target;
        }
        string? parent = Path.GetDirectoryName(full);
        if (parent is null) throw new OutputException(option, "the root directory cannot be a checkpoint");
        var parentStat = FileStatusInterop.Stat(parent);
        if (parentStat.Kind == FileKind.Missing) throw new OutputException(option, $"folder '{parent}' does not exist");
        if (parentStat.Kind != FileKind.Directory) throw new OutputException(option, $"'{parent}' is not a directory");
        if (!FileRenameInterop.IsWritable(parent)) throw new OutputException(option, $"folder '{parent}' is not writable");

        var stat = FileStatusInterop.Stat(full);
        OutputTarget.CheckNotInput(option, path, full, inputs);
        string cwd = Directory.GetCurrentDirectory();
        if (stat.Kind == FileKind.Directory && OutputTarget.IsAncestor(full, cwd))
            throw new OutputException(option, $"'{path}' is the current directory or contains it; a checkpoint needs a directory of its own");
        switch (stat.Kind)
        {
            case FileKind.Missing:
                return full;
            case FileKind.Directory:
                string? why = WhyNotCheckpoint(full);
                if (why is null) return full;
                if (force) return full;
                throw new OutputException(option, $"'{path}' is not a LiveDlrm checkpoint ({why}); refusing to replace it. Choose a new or empty directory (or --force to replace it)");
            default:
                throw new OutputException(option, $"'{path}' exists and is not a directory; a checkpoint is a directory");
        }
    }

    /// <summary>Null when <paramref name="dir"/> is empty or a checkpoint whose manifest verifies (it may be
    /// replaced), else a short reason naming what is in it.</summary>
    public static string? WhyNotCheckpoint(string dir)
    {
        string[] entries;
        try { entries = Directory.GetFileSystemEntries(dir).Select(e => Path.GetFileName(e)!).Order(StringComparer.Ordinal).ToArray(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return $"cannot list it: {e.Message}"; }
        if (entries.Length == 0) return null;
        if (!entries.Contains(Checkpoint.ManifestFile))
            return $"no {Checkpoint.ManifestFile}; it holds {entries.Length} entr{(entries.Length == 1 ? "y" : "ies")}, e.g. '{entries[0]}'";
        try { Checkpoint.ReadManifest(dir, recover: false); }
        catch (CheckpointException e) { return $"its manifest does not verify: {e.Message}"; }
        // A checkpoint the user added files to is not entirely ours: replacing it would delete them.
        string[] foreign = entries.Where(e => e is not (Checkpoint.ManifestFile or Checkpoint.ManifestChecksumFile or Checkpoint.DenseFile or Checkpoint.TablesFolder)).ToArray();
        if (foreign.Length == 0 && Directory.Exists(Path.Combine(dir, Checkpoint.TablesFolder)))
            foreign = Directory.GetFileSystemEntries(Path.Combine(dir, Checkpoint.TablesFolder)).Select(e => Path.GetFileName(e)!)
                .Where(e => !(e.EndsWith(".bin", StringComparison.Ordinal) && e.Length > 4 && char.IsAsciiDigit(e[0])))
                .Select(e => Checkpoint.TablesFolder + "/" + e).ToArray();
        return foreign.Length == 0 ? null : $"it also holds '{foreign[0]}', which is not part of a checkpoint";
    }
}
