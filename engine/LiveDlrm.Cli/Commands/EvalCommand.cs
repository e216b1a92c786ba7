using System.Globalization;
using System.Text.Json;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

public sealed class EvalCommand : ICommand
{
    public const long DefaultEvents = 100_000;

    public string Name => "eval";
    public string Summary => "score a stream with a checkpoint: AUC, logloss, calibration";
    public string Usage =>
        "  --model DIR             checkpoint directory (required)\n" +
        "  --json PATH             also write {auc, logloss, calibration, events, ...} to PATH\n" +
        "  --batch B               batch size (default 512)\n" +
        "  --skip N                skip the first N events (synthetic default: the events the checkpoint was trained on,\n" +
        "                          when it was trained on the synthetic stream with the same seed and drift)\n" +
        DataSourceArgs.Usage.Replace("default 1000000", $"default {DefaultEvents}, counted after --skip");

    public int Run(CommandArgs args)
    {
        string modelPath = args.Require("model");
        string? jsonPath = args.String("json");
        int batchSize = args.Int("batch", 512, min: 1, max: 1 << 20);
        long? skipArg = args.Has("skip") ? args.Long("skip", 0, min: 0) : null;
        var data = DataSourceArgs.Parse(args, DefaultEvents);
        args.EnsureAllUsed();

        TorchRuntime.EnsureInitialised();
        Checkpoint.Manifest manifest;
        try { manifest = Checkpoint.ReadManifest(modelPath); }
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

        using var model = Checkpoint.Load(modelPath);
        using var source = data.Open(Console.Error.WriteLine);
        try { model.Config.CheckLayout(source.Schema.Layout); }
        catch (ArgumentException e) { throw new UsageException($"the checkpoint does not fit the data: {e.Message}"); }
        if (skip > 0)
        {
            long skipped = TrainingLoop.Skip(source, skip);
            if (skipped < skip) throw new UsageException($"--skip {skip}: the data has only {skipped} events");
        }
        var summary = TrainingLoop.Evaluate(model, source, batchSize, out double optimum);

        Console.WriteLine($"events       {summary.Events:N0}");
        Console.WriteLine($"AUC          {summary.Auc.ToString("F4", inv)}" + (double.IsNaN(optimum) ? "" : $"   (optimum on these events: {optimum.ToString("F4", inv)}, gap {(optimum - summary.Auc).ToString("F4", inv)})"));
        Console.WriteLine($"logloss      {summary.LogLoss.ToString("F4", inv)}");
        Console.WriteLine($"calibration  {summary.Calibration.ToString("F3", inv)}   (mean prediction {summary.MeanPrediction.ToString("F4", inv)} / observed CTR {summary.ObservedCtr.ToString("F4", inv)})");
        if (jsonPath is not null)
        {
            using var stream = File.Create(jsonPath);
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteNumber("events", summary.Events);
            WriteNumber(w, "auc", summary.Auc);
            WriteNumber(w, "logloss", summary.LogLoss);
            WriteNumber(w, "calibration", summary.Calibration);
            WriteNumber(w, "mean_prediction", summary.MeanPrediction);
            WriteNumber(w, "observed_ctr", summary.ObservedCtr);
            WriteNumber(w, "optimum_auc", optimum);
            w.WriteNumber("skipped_events", skip);
            w.WriteString("model", Path.GetFullPath(modelPath));
            w.WriteString("data", data.Data);
            w.WriteEndObject();
        }
        return 0;
    }

    static void WriteNumber(Utf8JsonWriter w, string name, double value)
    {
        if (double.IsFinite(value)) w.WriteNumber(name, value);
        else w.WriteNull(name);
    }
}
