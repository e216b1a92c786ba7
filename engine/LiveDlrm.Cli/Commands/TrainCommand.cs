using System.CommandLine;
using System.Globalization;
using LiveDlrm.CommandLine;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

public sealed class TrainCommand : CliCommand
{
    public const long DefaultEvents = 300_000;
    static readonly DlrmTrainerOptions Defaults = new();

    readonly Option<string?> _out = Opt.Text("--out", "checkpoint directory to write (replaced atomically if it exists)", helpName: "DIR", required: true);
    readonly Option<string?> _config = Opt.Text("--config", "model config JSON (default: bottom [64,16], top [64,32,1], tables from the schema)", helpName: "PATH");
    readonly Option<string> _storage = Opt.Choice("--storage", "table storage of the default config", "fp32", "fp32", "fp16", "int8");
    readonly Option<int> _batch = Opt.Int("--batch", "minibatch size", 256, 1, 1 << 20);
    readonly Option<int> _epochs = Opt.Int("--epochs", "passes over the data", 1, 1, 1000);
    readonly Option<string> _optimizer = Opt.Choice("--optimizer", "dense optimizer", "adagrad", "adagrad", "adam");
    readonly Option<double> _lrDense = Opt.Double("--lr-dense", "dense learning rate", Defaults.DenseLearningRate, 1e-9, 100);
    readonly Option<double> _lrEmb = Opt.Double("--lr-emb", "row-wise Adagrad learning rate of the embeddings", (double)(decimal)Defaults.EmbeddingLearningRate, 1e-9, 100);
    readonly Option<int> _modelSeed = Opt.Int("--model-seed", "model initialisation seed", 1);
    readonly Option<int> _threads = Opt.Int("--threads", "threads of the sparse update (default: cores)", Defaults.Threads, 1, 1024);
    readonly DataSourceArgs _data = new(DefaultEvents);

    public TrainCommand() : base("train", "train a DLRM on a stream (full-parameter trainer) and write a checkpoint")
    {
        Add(_out); Add(_config); Add(_storage); Add(_batch); Add(_epochs); Add(_optimizer); Add(_lrDense); Add(_lrEmb);
        Add(_modelSeed); Add(_threads);
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
            Threads = result.GetValue(_threads),
        };
        int modelSeed = result.GetValue(_modelSeed);
        var data = _data.Get(result);

        TorchRuntime.EnsureInitialised();
        using var source = data.Open(CliLogging.For("train"));
        DlrmConfig config;
        try { config = configPath is null ? TrainingLoop.DefaultConfig(source.Schema.Layout, storage) : DlrmConfig.Load(configPath); }
        catch (DlrmConfigException e) { throw new UsageException($"--config: {e.Message}"); }
        try { config.CheckLayout(source.Schema.Layout); }
        catch (ArgumentException e) { throw new UsageException($"the model config does not fit the data: {e.Message}"); }

        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"data     {(data.IsSynthetic ? $"synthetic (seed {data.Seed}, drift {data.Drift.ToString(inv)}, {data.Events:N0} events)" : data.Data)}; {data.ResolveSchema().Description}");
        Console.WriteLine($"model    {config.Tables.Count} tables ({config.TableBytes / 1e6:F1} MB), d = {config.Dim}, bottom [{string.Join(", ", config.BottomMlp)}], top [{string.Join(", ", config.TopMlp)}]");
        using var model = DlrmModel.Create(config, modelSeed);
        using var trainer = new DlrmTrainer(model, options);
        // A synthetic stream has a known length; a file's is known only when --events caps it below its size.
        double? total = data.IsSynthetic ? (double)epochs * (data.Events ?? DefaultEvents) : null;
        var summary = Terminal.WithProgress(progress =>
        {
            var task = progress.Task("train", total, "events");
            var result = TrainingLoop.Train(trainer, source, batchSize, epochs, p => task.Report(p.Events,
                $"epoch {p.Epoch}  {p.Events,12:N0} events  {p.EventsPerSecond,10:N0} events/s  running AUC {p.RunningAuc.ToString("F4", inv)}  logloss {p.RunningLogLoss.ToString("F4", inv)}"));
            task.Complete();
            return result;
        });
        var m = summary.Progressive;
        Console.WriteLine($"trained  {summary.Events:N0} events in {summary.Seconds:F1} s ({summary.EventsPerSecond:N0} events/s); skipped steps {summary.SkippedSteps}");
        Console.WriteLine($"progressive (last epoch, predict-then-learn): AUC {m.Auc.ToString("F4", inv)}  logloss {m.LogLoss.ToString("F4", inv)}  calibration {m.Calibration.ToString("F3", inv)}");

        var metadata = new Dictionary<string, string>
        {
            ["data"] = data.Data,
            ["events"] = summary.Events.ToString(inv),
            ["epochs"] = epochs.ToString(inv),
            ["batch"] = batchSize.ToString(inv),
            ["progressiveAuc"] = m.Auc.ToString("R", inv),
        };
        if (data.IsSynthetic)
        {
            metadata["syntheticSeed"] = data.Seed.ToString(inv);
            metadata["syntheticDrift"] = data.Drift.ToString("R", inv);
            metadata["syntheticEvents"] = (data.Events ?? DefaultEvents).ToString(inv);
        }
        Checkpoint.Save(model, output, metadata);
        Console.WriteLine($"wrote    {Path.GetFullPath(output)}");
        return 0;
    }
}
