using System.Globalization;
using System.CommandLine;
using System.Text.Json.Serialization;
using LiveDlrm.CommandLine;
using LiveDlrm.Reports;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Files;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

internal sealed class EvalCommand : CliCommand
{
    public const long DefaultEvents = 100_000;

    readonly Option<string?> _model = Opt.Text("--model", "checkpoint directory", helpName: "DIR", required: true);
    readonly Option<string?> _json = Opt.Text("--json", "also write {auc, logloss, calibration, events, ...} to PATH", helpName: "PATH");
    readonly Option<int> _batch = Opt.Int("--batch", "batch size", 512, 1, 1 << 20);
    readonly Option<long?> _skip = Opt.OptionalLong("--skip", "skip the first N events (synthetic default: the events the checkpoint was trained on, when it was trained on the synthetic stream with the same seed and drift)", 0);
    readonly DataSourceArgs _data = new(DefaultEvents, ", counted after --skip");

    public EvalCommand() : base("eval", "score a stream with a checkpoint: AUC, logloss, calibration")
    {
        Add(_model); Add(_json); Add(_batch); Add(_skip);
        _data.AddTo(this);
    }

    protected override int Run(ParseResult result)
    {
        string modelPath = result.GetValue(_model)!;
        string? jsonPath = result.GetValue(_json);
        int batchSize = result.GetValue(_batch);
        long? skipArg = result.GetValue(_skip);
        var data = _data.Get(result);
        if (jsonPath is not null) jsonPath = OutputTarget.CheckFile("--json", jsonPath, [.. data.InputPaths(), modelPath]);

        TorchRuntime.EnsureInitialised();
        Checkpoint.Manifest manifest;
        try { manifest = Checkpoint.ReadManifest(modelPath, logger: CliLogging.For("eval")); }
        catch (CheckpointException e) { throw new UsageException($"--model: {e.Message}"); }
        var inv = CultureInfo.InvariantCulture;
        long skip = skipArg ?? 0;
        if (skipArg is null && data.IsSynthetic
            && manifest.Metadata.TryGetValue("syntheticSeed", out var seed) && seed == data.Seed.ToString(inv)
            && manifest.Metadata.TryGetValue("syntheticDrift", out var drift) && drift == data.Drift.ToString("R", inv)
            && manifest.Metadata.TryGetValue("syntheticEvents", out var trained))
        {
            skip = long.Parse(trained, inv);
            Console.WriteLine($"skipping the first {skip:N0} synthetic events (the checkpoint was trained on them; --skip 0 to include them)");
        }
        if (data.IsSynthetic) data = data with { Events = skip + (data.Events ?? DefaultEvents) };
        else if (data.Events is long n) data = data with { Events = skip + n };

        using var model = Checkpoint.Load(modelPath, logger: CliLogging.For("eval"));
        using var source = data.Open(CliLogging.For("eval"));
        try { model.Config.CheckLayout(source.Schema.Layout); }
        catch (ArgumentException e) { throw new UsageException($"the checkpoint does not fit the data: {e.Message}"); }
        if (skip > 0)
        {
            long skipped = TrainingLoop.Skip(source, skip);
            if (skipped < skip) throw new UsageException($"--skip {skip}: the data has only {skipped} events");
        }
        long? total = data.IsSynthetic && data.Events is long all ? all - skip : null;
        double optimum = double.NaN;
        var summary = Terminal.WithProgress(progress =>
        {
            var task = progress.Task("eval", total, "events");
            long nextLine = 1_000_000;   // a file of unknown length: a plain line per million events, not per batch
            var result = TrainingLoop.Evaluate(model, source, batchSize, out optimum, n =>
            {
                bool line = total is not null || n >= nextLine;
                if (n >= nextLine) nextLine += 1_000_000;
                task.Report(n, line ? $"eval {n,12:N0} events" : null);
            });
            task.Complete();
            return result;
        });

        Terminal.WriteTable(
            [new("events", 12), new("AUC", 8), new("optimum", 8), new("logloss", 8), new("calibration", 11), new("mean pred", 9), new("CTR", 8)],
            [[summary.Events.ToString(inv), summary.Auc.ToString("F4", inv), double.IsNaN(optimum) ? "-" : optimum.ToString("F4", inv),
              summary.LogLoss.ToString("F4", inv), summary.Calibration.ToString("F3", inv), summary.MeanPrediction.ToString("F4", inv),
              summary.ObservedCtr.ToString("F4", inv)]]);
        if (jsonPath is not null)
            ReportJson.Write(new EvalReport(summary.Events, summary.Auc, summary.LogLoss, summary.Calibration, summary.MeanPrediction, summary.ObservedCtr,
                                            optimum, skip, Path.GetFullPath(modelPath), data.Data), jsonPath, CliJsonContext.Default.EvalReport);
        return 0;
    }
}

/// <summary>What <c>eval --json</c> writes.</summary>
internal sealed record EvalReport(long Events, double Auc, double Logloss, double Calibration, double MeanPrediction, double ObservedCtr,
                                double OptimumAuc, long SkippedEvents, string Model, string Data);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true, Converters = [typeof(NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(EvalReport))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
