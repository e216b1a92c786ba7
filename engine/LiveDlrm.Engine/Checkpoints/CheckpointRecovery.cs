using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Checkpoints;

/// <summary>
/// Resolves what an interrupted <see cref="Checkpoint.Save(DlrmModel, string, IReadOnlyDictionary{string, string}?, bool)"/>
/// left beside a checkpoint path. A save writes <c>.NAME.tmp-OWNER-*</c>, then either swaps it with NAME in one step
/// or moves NAME to <c>.NAME.old-OWNER-*</c> and the temporary into place. So after a crash:
/// <list type="bullet">
/// <item>NAME present: it is complete (old or new); leftovers of dead owners are deleted.</item>
/// <item>NAME missing, a complete temporary present: the crash came between the two renames; roll forward.</item>
/// <item>NAME missing, no complete temporary, an <c>.old-*</c> present: roll back to the old checkpoint.</item>
/// </list>
/// Leftovers whose owner process (pid + start time in the name) is still running are never touched.
/// </summary>
internal static class CheckpointRecovery
{
    public const string TempKind = "tmp", OldKind = "old";

    /// <summary>Returns what was done (also logged as warnings to <paramref name="logger"/>: a recovery means a save was
    /// cut short), empty when nothing needed doing.</summary>
    public static IReadOnlyList<string> Recover(string full, CheckpointFileSystem fs, Func<string, string, bool> ownerAlive, ILogger? logger)
    {
        var done = new List<string>();
        string? parent = Path.GetDirectoryName(full);
        if (parent is null || !Directory.Exists(parent)) return done;
        string name = Path.GetFileName(full);
        List<string> temps, olds;
        try
        {
            temps = Leftovers(parent, name, TempKind);
            olds = Leftovers(parent, name, OldKind);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return done; }
        if (temps.Count == 0 && olds.Count == 0) return done;
        var deadTemps = temps.Where(t => !ownerAlive(Path.GetFileName(t), TempKind)).ToList();
        var deadOlds = olds.Where(o => !ownerAlive(Path.GetFileName(o), OldKind)).ToList();

        if (!Directory.Exists(full) && !File.Exists(full))
        {
            if (temps.Count > deadTemps.Count || olds.Count > deadOlds.Count)
                throw new CheckpointException(full, "is being replaced by another running process right now; retry when it has finished");
            string? forward = deadTemps.FirstOrDefault(IsComplete);
            string? back = deadOlds.FirstOrDefault(IsComplete);
            if (forward is not null)
            {
                fs.Move(forward, full);
                Note(done, logger, $"{full}: a save was interrupted; recovered the new checkpoint it had completed ({Path.GetFileName(forward)})");
                deadTemps.Remove(forward);
            }
            else if (back is not null)
            {
                fs.Move(back, full);
                Note(done, logger, $"{full}: a save was interrupted; restored the previous checkpoint ({Path.GetFileName(back)})");
                deadOlds.Remove(back);
            }
            fs.SyncDirectory(parent);
        }
        if (!Directory.Exists(full)) return done; // nothing complete to keep: leave leftovers for inspection
        foreach (string leftover in deadTemps.Concat(deadOlds))
        {
            try
            {
                fs.DeleteDirectory(leftover);
                Note(done, logger, $"{full}: removed {Path.GetFileName(leftover)} left by an interrupted save");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* retried at the next use */ }
        }
        return done;
    }

    static void Note(List<string> done, ILogger? logger, string message)
    {
        done.Add(message);
        logger?.LogWarning("checkpoint recovery: {Action}", message);
    }

    static List<string> Leftovers(string parent, string name, string kind) =>
        Directory.GetDirectories(parent, $".{name}.{kind}-*").Order(StringComparer.Ordinal).ToList();

    /// <summary>True when <paramref name="dir"/> holds a manifest that verifies and every file it lists, at the listed
    /// size (the contents' checksums are checked by the load that follows).</summary>
    internal static bool IsComplete(string dir)
    {
        try
        {
            using var doc = Checkpoint.ParseManifestOf(dir);
            var root = doc.RootElement;
            foreach (var t in root.GetProperty("tables").EnumerateArray())
                if (!SizeMatches(dir, t)) return false;
            return SizeMatches(dir, root.GetProperty("dense"));
        }
        catch (Exception e) when (e is CheckpointException or KeyNotFoundException or InvalidOperationException or FormatException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            return false;
        }
    }

    static bool SizeMatches(string dir, JsonElement entry)
    {
        string file = Path.Combine(dir, entry.GetProperty("file").GetString()!);
        return File.Exists(file) && new FileInfo(file).Length == entry.GetProperty("bytes").GetInt64();
    }
}
