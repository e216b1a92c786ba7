using System.Globalization;
using LiveDlrm.Scheduling.Latency;

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
        Console.WriteLine();
        Console.WriteLine(report.Modes[0].Workload == EmbeddingLookupWorkload.WorkloadName
            ? $"workload: {EmbeddingLookupWorkload.WorkloadName} (embedding-bag lookups standing in for DLRM Predict; trainer = sparse Adagrad proxy, not LoRA)"
            : $"workload: {report.Modes[0].Workload}: {report.WorkloadDescription}; trainer: {report.TrainerDescription}");
        foreach (var m in report.Modes) Console.WriteLine(LatencyHarness.Line(m));
        var qos = report.Mode(LatencyHarness.ModeQos);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"trainer-qos: P99 {qos.P99VsNoTrainer:F3}× no-trainer (goal ≤ 1.05), trainer at {qos.TrainerRateVsUnthrottled:P0} of unthrottled (goal ≥ 30 %)"));
        if (json is not null) { LatencyReportJson.Write(report, json); Console.WriteLine($"wrote {Path.GetFullPath(json)}"); }
        return 0;
    }
}
