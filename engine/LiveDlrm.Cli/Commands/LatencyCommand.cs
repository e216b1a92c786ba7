using System.Globalization;
using LiveDlrm.Harness;

namespace LiveDlrm.Cli.Commands;

public sealed class LatencyCommand : ICommand
{
    public string Name => "latency";
    public string Summary => "colocation latency harness: open-loop Poisson load, max QPS, then P50/P99/P99.9 without trainer, with it unthrottled, and under QoS";
    public string Usage => LatencyArgs.Usage + """

          --json PATH           also write the results as JSON (the same format as artifacts/bench/latency.json)
        """;

    public int Run(CommandArgs args)
    {
        LatencyHarnessOptions options;
        try { options = LatencyArgs.Parse(name => args.String(name), name => args.Flag(name)); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        string? json = args.String("json");
        args.EnsureAllUsed();
        var report = LatencyHarness.Run(options, Console.WriteLine);
        LatencyHarness.PrintSummary(report, Console.Out);
        if (json is not null) { LatencyReportJson.Write(report, json); Console.WriteLine($"wrote {Path.GetFullPath(json)}"); }
        return 0;
    }
}
