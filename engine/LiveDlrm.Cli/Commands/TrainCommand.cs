using System.Globalization;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

public sealed class TrainCommand : ICommand
{
    public const long DefaultEvents = 300_000;

    public string Name => "train";
    public string Summary => "train a DLRM on a stream (full-parameter trainer) and write a checkpoint";
    public string Usage =>
        "  --out DIR               checkpoint directory to write (required; replaced atomically if it exists)\n" +
        "  --config PATH           model config JSON (default: bottom [64,16], top [64,32,1], tables from the schema)\n" +
        "  --storage fp32|fp16|int8  table storage of the default config (default fp32)\n" +
        "  --batch B               minibatch size (default 256)\n" +
        "  --epochs E              passes over the data (default 1)\n" +
        "  --optimizer adagrad|adam  dense optimizer (default adagrad)\n" +
        "  --lr-dense X            dense learning rate (default 0.02)\n" +
        "  --lr-emb X              row-wise Adagrad learning rate of the embeddings (default 0.05)\n" +
        "  --model-seed S          model initialisation seed (default 1)\n" +
        "  --threads N             threads of the sparse update (default: cores)\n" +
        DataSourceArgs.Usage.Replace("default 1000000", $"default {DefaultEvents}");

    public int Run(CommandArgs args)
    {
        string output = args.Require("out");
        string? configPath = args.String("config");
        var storage = args.String("storage", "fp32") switch
        {
            "fp32" => EmbeddingStorage.Fp32,
            "fp16" => EmbeddingStorage.Fp16,
            "int8" => EmbeddingStorage.Int8Rowwise,
            var v => throw new UsageException($"--storage: '{v}' is not fp32, fp16 or int8"),
        };
        if (configPath is not null && args.Has("storage") ) throw new UsageException("--storage applies to the default config; set storage per table in --config");
        int batchSize = args.Int("batch", 256, min: 1, max: 1 << 20);
        int epochs = args.Int("epochs", 1, min: 1, max: 1000);
        var defaults = new DlrmTrainerOptions();
        var options = new DlrmTrainerOptions
        {
            DenseOptimizer = args.String("optimizer", "adagrad") switch
            {
                "adagrad" => DenseOptimizerKind.Adagrad,
                "adam" => DenseOptimizerKind.Adam,
                var v => throw new UsageException($"--optimizer: '{v}' is not adagrad or adam"),
            },
            DenseLearningRate = args.Double("lr-dense", defaults.DenseLearningRate, min: 1e-9, max: 100),
            EmbeddingLearningRate = (float)args.Double("lr-emb", defaults.EmbeddingLearningRate, min: 1e-9, max: 100),
            Threads = args.Int("threads", defaults.Threads, min: 1, max: 1024),
        };
        int modelSeed = args.Int("model-seed", 1);
        var data = DataSourceArgs.Parse(args, DefaultEvents);
        args.EnsureAllUsed();

        TorchRuntime.EnsureInitialised();
        using var source = data.Open(Console.Error.WriteLine);
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
        bool interactive = !Console.IsOutputRedirected;
        var summary = TrainingLoop.Train(trainer, source, batchSize, epochs, p =>
        {
            string line = $"epoch {p.Epoch}  {p.Events,12:N0} events  {p.EventsPerSecond,10:N0} events/s  running AUC {p.RunningAuc.ToString("F4", inv)}  logloss {p.RunningLogLoss.ToString("F4", inv)}";
            if (interactive) Console.Write("\r" + line);
            else Console.WriteLine(line);
        });
        if (interactive) Console.WriteLine();
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
