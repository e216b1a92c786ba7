using System.Diagnostics;
using System.IO.Hashing;
using System.Text;

namespace LiveDlrm.Tests.Cli;

/// <summary>Prepares a case's scratch folder: <c>scratch</c> is the folder, <c>lib</c> the shared fixtures.</summary>
internal delegate void Setup(string scratch, string lib);

/// <summary>
/// One hostile command line: what it runs (in its own scratch folder as the working directory), the exit code and
/// the word its one-line error must contain (the file, option or field at fault). <see cref="MayChange"/> lists
/// scratch paths the command is allowed to change or create (a successful run's outputs); everything else that
/// existed before must be byte-identical after, and a failed run may create nothing.
/// </summary>
internal sealed record HostileCase(string Name, string Args, int Exit, string Culprit, Setup[] Setup, string[] MayChange, Action<string, string>? Check = null)
{
    public override string ToString() => Name;
}

/// <summary>What one run of a case showed.</summary>
internal sealed record HostileOutcome(HostileCase Case, int Exit, string Stdout, string Stderr, bool TimedOut, IReadOnlyList<string> Damage)
{
    public bool StackTrace => Stderr.Contains("   at ", StringComparison.Ordinal) || Stderr.Contains("Unhandled exception", StringComparison.Ordinal);
    public IReadOnlyList<string> ErrorLines => Stderr.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith("livedlrm", StringComparison.Ordinal)).ToList();
    public bool ClearError => Case.Exit == 0 ? Exit == 0 : Exit == Case.Exit && !StackTrace && ErrorLines.Count == 1
                              && ErrorLines[0].Contains(Case.Culprit, StringComparison.OrdinalIgnoreCase);
}

internal static class HostileCliHarness
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    /// <summary>Splits a case's argument string on spaces; '...' quotes an argument with spaces (or '' an empty one).</summary>
    public static List<string> Split(string args)
    {
        var list = new List<string>();
        var sb = new StringBuilder();
        bool quoted = false, any = false;
        foreach (char c in args)
        {
            if (c == '\'') { quoted = !quoted; any = true; continue; }
            if (c == ' ' && !quoted) { if (any || sb.Length > 0) list.Add(sb.ToString()); sb.Clear(); any = false; continue; }
            sb.Append(c);
        }
        if (any || sb.Length > 0) list.Add(sb.ToString());
        return list;
    }

    public static HostileOutcome Run(HostileCase c, string cli, string lib, string scratch)
    {
        Directory.CreateDirectory(scratch);
        foreach (var s in c.Setup) s(scratch, lib);
        var before = Snapshot(scratch);
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = scratch, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(cli);
        foreach (string a in Split(c.Args)) psi.ArgumentList.Add(a);
        psi.Environment.Remove("LIVEDLRM_DEBUG");
        psi.Environment["DOTNET_TieredPGO"] = "0";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        bool timedOut = !p.WaitForExit(Timeout);
        if (timedOut) { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } p.WaitForExit(); }
        var after = Snapshot(scratch);
        var damage = new List<string>();
        foreach (var (path, hash) in before)
        {
            if (Allowed(c, path)) continue;
            if (!after.TryGetValue(path, out var now)) damage.Add($"{path} is gone");
            else if (now != hash) damage.Add($"{path} changed");
        }
        if (c.Exit != 0 || p.ExitCode != 0)
            foreach (var path in after.Keys)
                if (!before.ContainsKey(path) && !Allowed(c, path)) damage.Add($"{path} was created by a failed run");
        return new HostileOutcome(c, timedOut ? -1 : p.ExitCode, stdout.Result, stderr.Result, timedOut, damage);
    }

    static bool Allowed(HostileCase c, string path) =>
        c.MayChange.Any(m => path == m || path.StartsWith(m + "/", StringComparison.Ordinal));

    /// <summary>Every entry under <paramref name="root"/> (relative path → content hash, "dir", or "link → target"),
    /// not following links.</summary>
    public static Dictionary<string, string> Snapshot(string root)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        void Walk(string dir)
        {
            foreach (string e in Directory.GetFileSystemEntries(dir))
            {
                string rel = Path.GetRelativePath(root, e);
                var info = new FileInfo(e);
                if (info.LinkTarget is { } target) { map[rel] = "link → " + target; continue; }
                if (Directory.Exists(e)) { map[rel] = "dir"; Walk(e); continue; }
                try
                {
                    using var f = File.OpenRead(e);
                    var h = new XxHash3();
                    h.Append(f);
                    map[rel] = h.GetCurrentHashAsUInt64().ToString("x16");
                }
                catch (IOException ex) { map[rel] = "unreadable: " + ex.Message; }
            }
        }
        Walk(root);
        return map;
    }
}
