using System.Globalization;
using System.Text.RegularExpressions;

namespace LiveDlrm.Files;

/// <summary>
/// Owner tags for temporary files and directories: <c>PID-STARTTICKS</c> (the process id and its start time in
/// clock ticks since boot, field 22 of /proc/PID/stat), so a leftover from a dead process can be told apart from
/// one a live process is still writing, even after the pid is reused.
/// </summary>
internal static partial class TempOwner
{
    static readonly Lazy<string> Self = new(() => $"{Environment.ProcessId}-{StartTicks(Environment.ProcessId) ?? 0}");

    /// <summary>This process's tag.</summary>
    public static string Tag => Self.Value;

    /// <summary>A fresh temporary name for <paramref name="name"/> in the form <c>.NAME.KIND-PID-START-RANDOM</c>.</summary>
    public static string Name(string name, string kind) => $".{name}.{kind}-{Tag}-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>True when the temporary <paramref name="fileName"/> (as made by <see cref="Name"/> or with the tag
    /// anywhere after <c>KIND-</c>) belongs to a process that is still running. Names without a tag count as alive
    /// (never removed: they may not be ours).</summary>
    public static bool OwnerAlive(string fileName, string kind)
    {
        var m = TagPattern().Match(fileName[(fileName.LastIndexOf(kind + "-", StringComparison.Ordinal) + kind.Length + 1)..]);
        if (!m.Success) return true;
        int pid = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        long start = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        return StartTicks(pid) is long actual && (start == 0 || actual == start);
    }

    /// <summary>Start time of process <paramref name="pid"/> in clock ticks since boot; null if it does not exist.</summary>
    public static long? StartTicks(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
            string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(rest[19], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    [GeneratedRegex(@"^(\d{1,10})-(\d{1,20})-")]
    private static partial Regex TagPattern();
}
