using System.Globalization;
using LiveDlrm.Harness;

namespace LiveDlrm.Perf;

/// <summary><c>./build.sh bench latency</c>: the colocation harness (see docs/numa-qos.md), results in
/// artifacts/bench/latency.json. Default length ≈ 1.5 min: search (≤ 8 × 3 s) + 3 × (2 + 20 s).</summary>
public sealed class LatencyRun : IComparativeRun
{
    public string Name => "latency";
    public string Summary => "inference P50/P99/P99.9 at 50 % of max QPS: no trainer / trainer unthrottled / trainer under QoS (embedding-lookup proxy)";

    public int Run(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h"))
        {
            Console.WriteLine("usage: ./build.sh bench latency [options]\n" + LatencyArgs.Usage + "  --out PATH            JSON path (default artifacts/bench/latency.json)");
            return 0;
        }
        var values = new Dictionary<string, string?>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) { Console.Error.WriteLine($"bench latency: unexpected argument '{args[i]}'"); return 2; }
            string name = args[i][2..];
            values[name] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
        }
        var used = new HashSet<string>(StringComparer.Ordinal);
        LatencyHarnessOptions options;
        try
        {
            options = LatencyArgs.Parse(n => { used.Add(n); return values.TryGetValue(n, out var v) ? v ?? throw new ArgumentException($"--{n} needs a value") : null; },
                                        n => { used.Add(n); return values.ContainsKey(n); });
        }
        catch (ArgumentException e) { Console.Error.WriteLine($"bench latency: {e.Message}"); return 2; }
        used.Add("out");
        var unknown = values.Keys.Where(k => !used.Contains(k)).ToList();
        if (unknown.Count > 0) { Console.Error.WriteLine($"bench latency: unknown option(s) {string.Join(", ", unknown.Select(u => "--" + u))}"); return 2; }
        string output = values.TryGetValue("out", out var o) && o is not null ? o : Path.Combine(RepoRoot(), "artifacts", "bench", "latency.json");

        var report = LatencyHarness.Run(options, Console.WriteLine);
        LatencyHarness.PrintSummary(report, Console.Out);
        LatencyReportJson.Write(report, output);
        Console.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LiveDlrm.slnx"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}
