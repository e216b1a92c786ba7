using System.CommandLine;
using LiveDlrm.CommandLine;

namespace LiveDlrm.Perf;

/// <summary><c>./build.sh bench latency</c>: the colocation harness (see docs/numa-qos.md), results in
/// artifacts/bench/latency.json. Default length ≈ 1.5 min: search (≤ 8 × 3 s) + 3 × (2 + 20 s).</summary>
internal sealed class LatencyRun : BenchRun
{
    readonly LatencyArgs _args = new();
    readonly Option<string?> _out = Opt.Text("--out", "JSON path (default artifacts/bench/latency.json)", helpName: "PATH");

    public LatencyRun() : base("latency", "inference P50/P99/P99.9 at 50 % of max QPS: no trainer / trainer unthrottled / trainer under QoS (embedding-lookup proxy)")
    {
        _args.AddTo(this);
        Add(_out);
    }

    protected override int Run(ParseResult result)
    {
        _args.RunAndReport(result, result.GetValue(_out) ?? Path.Combine(RepoRoot(), "artifacts", "bench", "latency.json"));
        return 0;
    }
}
