using System.CommandLine;
using LiveDlrm.CommandLine;

namespace LiveDlrm.Cli.Commands;

internal sealed class LatencyCommand : CliCommand
{
    readonly LatencyArgs _args = new();
    readonly Option<string?> _json = Opt.Text("--json", "also write the results as JSON (the same format as artifacts/bench/latency.json)", helpName: "PATH");

    public LatencyCommand() : base("latency", "colocation latency harness: open-loop Poisson load, max QPS, then P50/P99/P99.9 without trainer, with it unthrottled, and under QoS")
    {
        _args.AddTo(this);
        Add(_json);
    }

    protected override int Run(ParseResult result)
    {
        string? json = result.GetValue(_json);
        if (json is not null) json = LiveDlrm.Files.OutputTarget.CheckFile("--json", json);
        _args.RunAndReport(result, json);
        return 0;
    }
}
