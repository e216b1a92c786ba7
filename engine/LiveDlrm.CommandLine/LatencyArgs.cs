using System.CommandLine;
using LiveDlrm.Harness;

namespace LiveDlrm.CommandLine;

/// <summary>The colocation harness options shared by <c>livedlrm latency</c> and <c>./build.sh bench latency</c>.
/// Shape options default to the harness's records (shrunk by <c>--quick</c>), so they are applied only when given.</summary>
internal sealed class LatencyArgs
{
    static readonly LatencyHarnessOptions D = new();

    public Option<double> Seconds { get; } = Opt.Double("--seconds", "measured length of each mode", D.ModeDuration.TotalSeconds, 0.1, 3600);
    public Option<double> Warmup { get; } = Opt.Double("--warmup", "warm-up seconds before each mode", D.Warmup.TotalSeconds, 0, 600);
    public Option<double> TrialSeconds { get; } = Opt.Double("--trial-seconds", "length of each max-QPS search trial", D.SearchTrial.TotalSeconds, 0.1, 600);
    public Option<double?> MaxQps { get; } = Opt.OptionalDouble("--max-qps", "skip the search, take Q as the maximum sustainable QPS", 0.001, 1e9);
    public Option<double> Load { get; } = Opt.Double("--load", "fraction of max QPS the modes run at", D.LoadFraction, 0.01, 1);
    public Option<double> SloFactor { get; } = Opt.Double("--slo-factor", "sustainable = all served and P50 ≤ K × P50 at light load", D.SloFactor, 1.01, 1e6);
    public Option<double?> QosTargetMs { get; } = Opt.OptionalDouble("--qos-target-ms", "QoS P99 target in mode 3, in ms (default: mode 1's P99)", 0.001, 60_000);
    public Option<string> Workload { get; } = Opt.Choice("--workload",
        "dlrm: the synthetic DLRM model's Predict through LoRA adapters, with the online LoRA trainer fed from the stream; proxy: embedding-bag lookups and the sparse Adagrad trainer proxy",
        "dlrm", "dlrm", "dlrm-live", "proxy");
    public Option<int?> Batch { get; } = Opt.OptionalInt("--batch", $"events per request (default {D.Dlrm.Batch}; proxy {D.Workload.Batch})", 1, 65536);
    public Option<long?> BaseEvents { get; } = Opt.OptionalLong("--base-events", $"dlrm: prefix events the base model is trained on, one pass; 0 = random init (default {D.Dlrm.BaseTrainEvents})", 0, 1_000_000_000);
    public Option<int?> Tables { get; } = Opt.OptionalInt("--tables", $"inference proxy: tables (default {D.Workload.Tables})", 1, 64);
    public Option<long?> Rows { get; } = Opt.OptionalLong("--rows", $"inference proxy: rows per table (default {D.Workload.Rows})", 1, 1_000_000_000);
    public Option<int?> Dim { get; } = Opt.OptionalInt("--dim", $"inference proxy: embedding dim (default {D.Workload.Dim})", 1, 4096);
    public Option<int?> Pooling { get; } = Opt.OptionalInt("--pooling", $"inference proxy: lookups per bag (default {D.Workload.Pooling})", 1, 4096);
    public Option<int?> TrainerTables { get; } = Opt.OptionalInt("--trainer-tables", $"trainer proxy: tables (default {D.Trainer.Tables})", 1, 64);
    public Option<long?> TrainerRows { get; } = Opt.OptionalLong("--trainer-rows", $"trainer proxy: rows per table (default {D.Trainer.Rows})", 1, 1_000_000_000);
    public Option<int?> TrainerThreads { get; } = Opt.OptionalInt("--trainer-threads", "trainer threads (default: the plan's thread count)", 1, 1024);
    public Option<bool> Quick { get; } = Opt.Flag("--quick", "tiny tables and 1-second modes (a smoke run, numbers meaningless)");

    public IEnumerable<Option> All =>
        [Seconds, Warmup, TrialSeconds, MaxQps, Load, SloFactor, QosTargetMs, Workload, Batch, BaseEvents, Tables, Rows, Dim, Pooling,
         TrainerTables, TrainerRows, TrainerThreads, Quick];

    public void AddTo(Command command) { foreach (var o in All) command.Options.Add(o); }

    /// <summary>Runs the harness with the parsed options, prints its summary and, when <paramref name="jsonPath"/> is
    /// given, writes the JSON report there (both the CLI command and the bench run end this way).</summary>
    public void RunAndReport(ParseResult r, string? jsonPath)
    {
        var report = LatencyHarness.Run(Get(r), CliLogging.For("latency"));
        LatencyHarness.PrintSummary(report, Console.Out);
        if (jsonPath is null) return;
        LatencyReportJson.Write(report, jsonPath);
        Console.WriteLine($"wrote {Path.GetFullPath(jsonPath)}");
    }

    static bool Given(ParseResult r, Option o) => r.GetResult(o) is { Implicit: false };

    public LatencyHarnessOptions Get(ParseResult r)
    {
        var o = new LatencyHarnessOptions();
        var dlrm = o.Dlrm;
        var w = o.Workload;
        var t = o.Trainer;
        if (r.GetValue(Quick))
        {
            w = w with { Rows = 20_000, Batch = 32, Pooling = 8 };
            t = t with { Rows = 20_000 };
            dlrm = dlrm with { Batch = 32, BaseTrainEvents = 5_000, RequestBatches = 16 };
            o = o with { ModeDuration = TimeSpan.FromSeconds(1), Warmup = TimeSpan.FromSeconds(0.2), SearchTrial = TimeSpan.FromSeconds(0.5) };
        }
        w = w with
        {
            Tables = r.GetValue(Tables) ?? w.Tables, Rows = r.GetValue(Rows) ?? w.Rows, Dim = r.GetValue(Dim) ?? w.Dim,
            Batch = r.GetValue(Batch) ?? w.Batch, Pooling = r.GetValue(Pooling) ?? w.Pooling,
        };
        dlrm = dlrm with { Batch = r.GetValue(Batch) ?? dlrm.Batch, BaseTrainEvents = r.GetValue(BaseEvents) ?? dlrm.BaseTrainEvents };
        t = t with { Tables = r.GetValue(TrainerTables) ?? t.Tables, Rows = r.GetValue(TrainerRows) ?? t.Rows };
        return o with
        {
            Kind = r.GetValue(Workload) == "proxy" ? LatencyWorkloadKind.Proxy : LatencyWorkloadKind.DlrmLive,
            Dlrm = dlrm,
            Workload = w,
            Trainer = t,
            ModeDuration = Given(r, Seconds) ? TimeSpan.FromSeconds(r.GetValue(Seconds)) : o.ModeDuration,
            Warmup = Given(r, Warmup) ? TimeSpan.FromSeconds(r.GetValue(Warmup)) : o.Warmup,
            SearchTrial = Given(r, TrialSeconds) ? TimeSpan.FromSeconds(r.GetValue(TrialSeconds)) : o.SearchTrial,
            MaxQps = r.GetValue(MaxQps),
            LoadFraction = r.GetValue(Load),
            SloFactor = r.GetValue(SloFactor),
            QosTarget = r.GetValue(QosTargetMs) is double ms ? TimeSpan.FromMilliseconds(ms) : null,
            TrainerThreads = r.GetValue(TrainerThreads),
        };
    }
}
