using System.CommandLine;
using System.Globalization;
using LiveDlrm.CommandLine;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Files;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

internal sealed class TrainCommand : CliCommand
{
    public const long DefaultEvents = 300_000;
    static readonly DlrmTrainerOptions Defaults = TrainingLoop.OfflineTrainerOptions;

    readonly Option<string?> _out = Opt.Text("--out", "checkpoint directory to write (replaced atomically if it exists)", helpName: "DIR", required: true);
    readonly Option<string?> _config = Opt.Text("--config", "model config JSON (default: bottom [64,16], top [64,32,1], tables from the schema)", helpName: "PATH");
    readonly Option<string> _storage = Opt.Choice("--storage", "table storage of the default config", "fp32", "fp32", "fp16", "int8");
    readonly Option<int> _batch = Opt.Int("--batch", "minibatch size", 256, 1, 1 << 20);
    readonly Option<int> _epochs = Opt.Int("--epochs", "passes over the data", 1, 1, 1000);
    readonly Option<string> _optimizer = Opt.Choice("--optimizer", "dense optimizer", "adagrad", "adagrad", "adam");
    readonly Option<double> _lrDense = Opt.Double("--lr-dense", "dense learning rate", Defaults.DenseLearningRate, 1e-9, 100);
    readonly Option<double> _lrEmb = Opt.Double("--lr-emb", "row-wise Adagrad learning rate of the embeddings", (double)(decimal)Defaults.EmbeddingLearningRate, 1e-9, 100);
    readonly Option<double> _embAccumulator = Opt.Double("--emb-accumulator", "starting Adagrad accumulator of every embedding row (0 = plain row-wise Adagrad)", (double)(decimal)Defaults.EmbeddingInitialAccumulator, 0, 100);
    readonly Option<double> _embL2 = Opt.Double("--emb-l2", "L2 penalty of an embedding row per occurrence", (double)(decimal)Defaults.EmbeddingWeightDecay, 0, 100);
    readonly Option<double> _validation = Opt.Double("--validation", "share of the stream's time-ordered tail held out for early stopping (0 = none)", 0.1, 0, 0.5);
    readonly Option<int> _modelSeed = Opt.Int("--model-seed", "model initialisation seed", 1);
    readonly Option<int> _threads = Opt.Int("--threads", "threads of the sparse update (default: cores)", Defaults.Threads, 1, 1024);
    readonly Option<bool> _force = Opt.Flag("--force", "replace an --out directory that is not a checkpoint (never the current directory or one holding an input)");
    readonly DataSourceArgs _data = new(DefaultEvents);

    public TrainCommand() : base("train", "train a DLRM on a stream (full-parameter trainer) and write a checkpoint")
    {
        Add(_out); Add(_config); Add(_storage); Add(_batch); Add(_epochs); Add(_optimizer); Add(_lrDense); Add(_lrEmb);
        Add(_embAccumulator); Add(_embL2); Add(_validation); Add(_modelSeed); Add(_threads); Add(_force);
        _data.AddTo(this);
    }

    protected override int Run(ParseResult result)
    {
        string output = result.GetValue(_out)!;
        string? configPath = result.GetValue(_config);
        var storage = result.GetValue(_storage) switch
        {
            "fp16" => EmbeddingStorage.Fp16,
            "int8" => EmbeddingStorage.Int8Rowwise,
            _ => EmbeddingStorage.Fp32,
        };
        if (configPath is not null && Given(result, _storage)) throw new UsageException("--storage applies to the default config; set storage per table in --config");
        int batchSize = result.GetValue(_batch);
        int epochs = result.GetValue(_epochs);
        var options = new DlrmTrainerOptions
        {
            DenseOptimizer = result.GetValue(_optimizer) == "adam" ? DenseOptimizerKind.Adam : DenseOptimizerKind.Adagrad,
            DenseLearningRate = result.GetValue(_lrDense),
            EmbeddingLearningRate = (float)result.GetValue(_lrEmb),
            EmbeddingInitialAccumulator = (float)result.GetValue(_embAccumulator),
            EmbeddingWeightDecay = (float)result.GetValue(_embL2),
            Threads = result.GetValue(_threads),
        };
        int modelSeed = result.GetValue(_modelSeed);
        double validation = result.GetValue(_validation);
        var data = _data.Get(result);
        bool force = result.GetValue(_force);
        // Checked before any work: a bad --out fails in a moment, not after a training pass.
        output = CheckpointTarget.Check("--out", output, [.. data.InputPaths(), .. configPath is null ? Array.Empty<string>() : [configPath]], force);

        TorchRuntime.EnsureInitialised();
        using var source = data.Open(CliLogging.For("train"));
        DlrmConfig config;
        try { config = configPath is null ? TrainingLoop.DefaultConfig(source.Schema.Layout, storage) : DlrmConfig.Load(configPath); }
        catch (DlrmConfigException e) { throw new UsageException(configPath is null ? $"the schema's layout gives no valid default model: {e.Message}" : $"--config: {e.Message}"); }
        try { config.CheckLayout(source.Schema.Layout); }
        catch (ArgumentException e) { throw new UsageException($"the model config does not fit the data: {e.Message}"); }

        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"data     {(data.IsSynthetic ? $"synthetic (seed {data.Seed}, drift {data.Drift.ToString(inv)}, {data.Events:N0} events)" : data.Data)}; {data.ResolveSchema().Description}");
        Console.WriteLine($"model    {config.Tables.Count} tables ({config.TableBytes / 1e6:F1} MB), d = {config.Dim}, bottom [{string.Join(", ", config.BottomMlp)}], top [{string.Join(", ", config.TopMlp)}]");
        config.CheckMemory();
        using var model = DlrmModel.Create(config, modelSeed);
        using var trainer = new DlrmTrainer(model, options);
        // A synthetic stream has a known length; a file's is known only when --events caps it below its size.
        double? total = data.IsSynthetic ? (double)epochs * (data.Events ?? DefaultEvents) * (1 - validation) : null;
        var summary = Terminal.WithProgress(progress =>
        {
            var task = progress.Task("train", total, "events");
            var result = TrainingLoop.Train(trainer, source, batchSize, epochs, p => task.Report(p.Events,
                $"epoch {p.Epoch}  {p.Events,12:N0} events  {p.EventsPerSecond,10:N0} events/s  running AUC {p.RunningAuc.ToString("F4", inv)}  logloss {p.RunningLogLoss.ToString("F4", inv)}"),
                validationFraction: validation);
            task.Complete();
            return result;
        });
        var m = summary.Progressive;
        Console.WriteLine($"trained  {summary.Events:N0} events in {summary.Seconds:F1} s ({summary.EventsPerSecond:N0} events/s); skipped steps {summary.SkippedSteps}");
        Console.WriteLine($"progressive (last epoch, predict-then-learn): AUC {m.Auc.ToString("F4", inv)}  logloss {m.LogLoss.ToString("F4", inv)}  calibration {m.Calibration.ToString("F3", inv)}");
        if (summary.Validation is { Count: > 0 } v)
        {
            for (int e = 0; e < v.Count; e++)
                Console.WriteLine($"validation epoch {e + 1} ({summary.ValidationEvents:N0} tail events): AUC {v[e].Auc.ToString("F4", inv)}  logloss {v[e].LogLoss.ToString("F4", inv)}{(e + 1 == summary.BestEpoch ? "  (kept)" : "")}");
            if (summary.StoppedEarly) Console.WriteLine($"stopped  after epoch {summary.Epochs}: validation logloss rose; the model holds epoch {summary.BestEpoch}'s weights");
        }

        var metadata = new Dictionary<string, string>
        {
            ["data"] = data.Data,
            ["events"] = summary.Events.ToString(inv),
            ["epochs"] = summary.Epochs.ToString(inv),
            ["bestEpoch"] = summary.BestEpoch.ToString(inv),
            ["validationEvents"] = summary.ValidationEvents.ToString(inv),
            ["batch"] = batchSize.ToString(inv),
            ["progressiveAuc"] = m.Auc.ToString("R", inv),
        };
        if (data.IsSynthetic)
        {
            metadata["syntheticSeed"] = data.Seed.ToString(inv);
            metadata["syntheticDrift"] = data.Drift.ToString("R", inv);
            metadata["syntheticEvents"] = (data.Events ?? DefaultEvents).ToString(inv);
        }
        Checkpoint.Save(model, output, metadata, replaceAnyDirectory: force);
        Console.WriteLine($"wrote    {output}");
        return 0;
    }
}
