using System.Globalization;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Replay;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

public sealed class ReplayCommand : ICommand
{
    /// <summary>Events of the default run (`./build.sh run`): two days of event time, sized to finish the three modes
    /// in ≤ 3 minutes on 2 cores.</summary>
    public const long DefaultEvents = 1_728_000;
    /// <summary>Event-time rate of the default synthetic stream for the replay: 1.728 M events span 48 h, so the base
    /// model learns on one whole day (every hour of it) and the replay covers the next day in 24 one-hour windows.</summary>
    public const double DefaultEventsPerSecond = 10;

    /// <summary>World of the default synthetic replay stream: small enough that the prefix teaches the base model
    /// most users and items (the synth command's 50 000 users would be seen about once each), so what the modes
    /// differ in is drift, not first-time learning.</summary>
    public const int DefaultUsers = 5_000, DefaultItems = 2_000, DefaultNewItems = 4_000;
    /// <summary>The replay's default world (docs/replay.md): user and item ids hashed into 2¹⁷-row tables, as production
    /// tables are sized far beyond the ids active at once, and 12 short-lived trend bursts an hour on top of the slow drift.</summary>
    public static readonly SyntheticStreamConfig DefaultWorld = new()
    {
        Users = DefaultUsers, InitialItems = DefaultItems, MaxNewItems = DefaultNewItems,
        HashedRows = 1 << 17, TrendBurstsPerHour = 12,
    };
    static readonly ReplayOptions D = new();
    static string F(double v) => v.ToString(CultureInfo.InvariantCulture);
    static string F(float v) => v.ToString(CultureInfo.InvariantCulture);

    public string Name => "replay";
    public string Summary => "replay a timestamped stream in event time: stale vs delta-sync vs live LoRA adapters";
    public string Usage =>
        "  --mode stale|delta|live|all   update mode (default all: the three side by side on the same stream)\n" +
        DataSourceArgs.Usage.Replace("(default 1000000)", $"(default {DefaultEvents})").Replace("(default 20)", $"(default {DefaultEventsPerSecond} for replay)") + "\n" +
        "  --base-prefix F|UNIXTIME      base model trained on this first fraction of the stream (default " + F(D.BasePrefixFraction ?? 0) + ") or the events before a unix time\n" +
        "  --model DIR                   serve this checkpoint as the base instead (replays the whole stream unless --base-prefix)\n" +
        "  --base-epochs N               passes over the prefix for the base model (default 1)\n" +
        "  --sync-interval S             delta: seconds of event time between syncs (default 600)\n" +
        "  --sync-delay S                delta: seconds until a sync lands on the server (default 300)\n" +
        "  --label-delay S               seconds of event time until a label can be used (default 60)\n" +
        "  --window S                    report window in event seconds (default 3600)\n" +
        "  --batch N                     events scored together, and the delta trainer's minibatch (default 256)\n" +
        $"  --online-batch N              live trainer minibatch (default {D.OnlineTrainer.BatchSize})\n" +
        $"  --rank R --min-rank R --max-rank R   live adapters: initial, minimum and maximum rank (defaults {D.OnlineTrainer.Adapter.InitialRank}, {D.OnlineTrainer.Adapter.MinRank}, {D.OnlineTrainer.Adapter.MaxRank})\n" +
        $"  --rank-interval N             live: steps between rank adaptations, 0 = off (default {D.OnlineTrainer.Adapter.RankAdaptInterval})\n" +
        "  --energy T --grow-threshold E live: rank adaptation keeps the fewest directions holding ≥ T of the energy and\n" +
        $"                                grows when the last holds > E (defaults {F(D.OnlineTrainer.Adapter.EnergyToKeep)}, {F(D.OnlineTrainer.Adapter.GrowThreshold)})\n" +
        "  --budget F                    live: adapter bytes as a fraction of table bytes (default 0.01; see --budget-scope)\n" +
        $"  --lr-a X --lr-b X             live: adapter learning rates (defaults {F(D.OnlineTrainer.Adapter.LearningRateA)}, {F(D.OnlineTrainer.Adapter.LearningRateB)})\n" +
        "  --dim D                       embedding dim of a trained base model (default 32; bottom MLP [max(32, D), D])\n" +
        "  --budget-scope joint|table    live: --budget over all tables jointly (default; small tables funded from the\n" +
        "                                the total) or per table\n" +
        $"  --small-table-budget M        live, joint budget: a tiny table's adapter may take up to M × its own bytes (default {F(D.OnlineTrainer.SmallTableBudgetMultiple)})\n" +
        $"  --adagrad-init X              live: Adagrad accumulator a new adapter row starts with (default {F(D.OnlineTrainer.Adapter.AdagradInitialAccumulator)})\n" +
        "  --optimizer adagrad|sgd       live: adapter optimizer (default adagrad)\n" +
        "  --no-reuse                    live: re-pool and re-run the dense forward under autograd at training time\n" +
        "                                instead of reusing the serving forward (the reference path)\n" +
        $"  --last-layer on|off           live: also learn an additive update of the top MLP's last layer (default {(D.OnlineTrainer.AdaptLastLayer ? "on" : "off")})\n" +
        $"  --last-layer-lr X             live: its Adagrad learning rate (default {F(D.OnlineTrainer.LastLayerLearningRate)})\n" +
        "  --lr X --dense-lr X           base + delta trainer: embedding and dense learning rates (defaults 0.05, 0.02)\n" +
        SyntheticWorldArgs.Usage(DefaultWorld) + "\n" +
        "  --live-backend cpu|pim        live: pool the base rows on the CPU kernels (default) or on UPMEM DPUs (real\n" +
        "                                ones when the SDK build finds them, else the emulation); the host adds the\n" +
        "                                adapter term and pushes merges to MRAM\n" +
        "  --pim-dpus N                  with --live-backend pim: DPUs per table (default 64)\n" +
        "  --out DIR                     report.json and plots (default artifacts/replay)\n" +
        "  --no-plots                    skip the PNG plots";

    public int Run(CommandArgs args)
    {
        var modes = args.String("mode", "all") switch
        {
            "all" => new[] { UpdateMode.Stale, UpdateMode.Delta, UpdateMode.Live },
            "stale" => [UpdateMode.Stale],
            "delta" => [UpdateMode.Delta],
            "live" => [UpdateMode.Live],
            var v => throw new UsageException($"--mode: '{v}' is not stale, delta, live or all"),
        };
        var data = DataSourceArgs.Parse(args, DefaultEvents);
        if (data.IsSynthetic && data.EventsPerSecond is null) data = data with { EventsPerSecond = DefaultEventsPerSecond };
        if (!data.IsSynthetic && SyntheticWorldArgs.AnyGiven(args))
            throw new UsageException("--users/--items/--new-items/--hashed-rows/--bursts-* apply to --data synthetic only");
        var world = SyntheticWorldArgs.Apply(args, DefaultWorld);
        string? model = args.String("model");
        if (model is not null && !Directory.Exists(model)) throw new UsageException($"--model: directory '{model}' does not exist");

        double? prefixFraction = model is null ? D.BasePrefixFraction : null;
        long? prefixTime = null;
        if (args.String("base-prefix") is { } prefixText)
        {
            if (!double.TryParse(prefixText, NumberStyles.Float, CultureInfo.InvariantCulture, out double p) || !(p >= 0))
                throw new UsageException($"--base-prefix: '{prefixText}' is neither a fraction in [0, 1) nor a unix time");
            if (p < 1) prefixFraction = p;
            else if (p == Math.Floor(p)) { prefixTime = (long)p; prefixFraction = null; }
            else throw new UsageException($"--base-prefix: '{prefixText}' is neither a fraction in [0, 1) nor a whole unix time");
        }

        var defaults = new ReplayOptions();
        var adapterDefaults = defaults.OnlineTrainer.Adapter;
        var optimizer = args.String("optimizer", "adagrad") switch
        {
            "adagrad" => AdapterOptimizer.Adagrad,
            "sgd" => AdapterOptimizer.Sgd,
            var v => throw new UsageException($"--optimizer: '{v}' is not adagrad or sgd"),
        };
        var adapter = adapterDefaults with
        {
            InitialRank = args.Int("rank", adapterDefaults.InitialRank, min: 1, max: 1024),
            MaxRank = args.Int("max-rank", adapterDefaults.MaxRank, min: 1, max: 1024),
            MinRank = args.Int("min-rank", adapterDefaults.MinRank, min: 1, max: 1024),
            RankAdaptInterval = args.Int("rank-interval", adapterDefaults.RankAdaptInterval, min: 0),
            EnergyToKeep = args.Double("energy", adapterDefaults.EnergyToKeep, min: 1e-6, max: 1),
            GrowThreshold = args.Double("grow-threshold", adapterDefaults.GrowThreshold, min: 0, max: 1),
            BudgetFraction = args.Double("budget", adapterDefaults.BudgetFraction, min: 1e-6, max: 1),
            LearningRateA = (float)args.Double("lr-a", adapterDefaults.LearningRateA, min: 0, max: 100),
            LearningRateB = (float)args.Double("lr-b", adapterDefaults.LearningRateB, min: 0, max: 100),
            AdagradInitialAccumulator = (float)args.Double("adagrad-init", adapterDefaults.AdagradInitialAccumulator, min: 0, max: 1e6),
            Optimizer = optimizer,
        };
        if (adapter.InitialRank > adapter.MaxRank) throw new UsageException($"--rank {adapter.InitialRank} exceeds --max-rank {adapter.MaxRank}");
        if (adapter.MinRank > adapter.MaxRank) throw new UsageException($"--min-rank {adapter.MinRank} exceeds --max-rank {adapter.MaxRank}");
        if (adapter.InitialRank < adapter.MinRank) throw new UsageException($"--rank {adapter.InitialRank} is below --min-rank {adapter.MinRank}");
        var full = defaults.FullTrainer with
        {
            EmbeddingLearningRate = (float)args.Double("lr", defaults.FullTrainer.EmbeddingLearningRate, min: 1e-9, max: 100),
            DenseLearningRate = args.Double("dense-lr", defaults.FullTrainer.DenseLearningRate, min: 1e-9, max: 100),
        };
        var options = defaults with
        {
            Modes = modes,
            ModelPath = model,
            BasePrefixFraction = prefixFraction,
            BasePrefixTime = prefixTime,
            BaseEpochs = args.Int("base-epochs", 1, min: 1, max: 100),
            BottomMlp = args.Int("dim", defaults.BottomMlp[^1], min: 1, max: 1024) is var dim && dim == defaults.BottomMlp[^1]
                ? defaults.BottomMlp : [Math.Max(defaults.BottomMlp[0], dim), dim],
            SyncIntervalSeconds = args.Long("sync-interval", defaults.SyncIntervalSeconds, min: 1),
            SyncDelaySeconds = args.Long("sync-delay", defaults.SyncDelaySeconds, min: 0),
            LabelDelaySeconds = args.Long("label-delay", defaults.LabelDelaySeconds, min: 0),
            WindowSeconds = args.Long("window", defaults.WindowSeconds, min: 1),
            ServeBatch = args.Int("batch", defaults.ServeBatch, min: 1, max: 1 << 20),
            FullTrainer = full,
            OnlineTrainer = defaults.OnlineTrainer with
            {
                BatchSize = args.Int("online-batch", defaults.OnlineTrainer.BatchSize, min: 1, max: 1 << 20),
                ReuseForward = !args.Flag("no-reuse"),
                AdaptLastLayer = args.String("last-layer", defaults.OnlineTrainer.AdaptLastLayer ? "on" : "off") switch
                {
                    "on" => true,
                    "off" => false,
                    var other => throw new UsageException($"--last-layer must be on or off, not '{other}'"),
                },
                LastLayerLearningRate = (float)args.Double("last-layer-lr", defaults.OnlineTrainer.LastLayerLearningRate, min: 1e-9, max: 10),
                SmallTableBudgetMultiple = args.Double("small-table-budget", defaults.OnlineTrainer.SmallTableBudgetMultiple, min: 1e-6, max: 16),
                JointBudget = args.String("budget-scope", defaults.OnlineTrainer.JointBudget ? "joint" : "table") switch
                {
                    "joint" => true,
                    "table" => false,
                    var other => throw new UsageException($"--budget-scope must be joint or table, not '{other}'"),
                },
                Adapter = adapter,
                Log = line => Console.Error.WriteLine("  " + line),
            },
        };
        string liveBackend = args.String("live-backend", "cpu");
        int pimDpus = args.Int("pim-dpus", 64, min: 1, max: 2560);
        options = liveBackend switch
        {
            "cpu" => options,
            // Auto: real DPUs when the SDK build finds them, else the emulation; the choice is logged.
            "pim" => options with
            {
                LiveBaseBackend = () => new LiveDlrm.Pim.PimEmbeddingBackend(new LiveDlrm.Pim.PimBackendOptions
                {
                    Backend = LiveDlrm.Pim.PimBackendKind.Auto, DpusPerTable = pimDpus,
                    Log = line => Console.Error.WriteLine("  " + line),
                }),
            },
            var other => throw new UsageException($"--live-backend must be cpu or pim, not '{other}'"),
        };
        string outDir = args.String("out", Path.Combine("artifacts", "replay"));
        bool plots = !args.Flag("no-plots");
        args.EnsureAllUsed();
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

        Directory.CreateDirectory(outDir);
        string dataName = data.IsSynthetic ? $"synthetic (events {data.Events}, seed {data.Seed}, drift {data.Drift}, {data.EventsPerSecond} events/s, {world.Users} users, {world.InitialItems}+{world.MaxNewItems} items)" : data.Data;
        Console.WriteLine($"replay: {dataName}; modes {string.Join(", ", modes.Select(m => m.ToString().ToLowerInvariant()))}");
        var progress = new ProgressBar();
        Func<IEventSource> open = data.IsSynthetic
            ? () => new SyntheticEventSource(world with { Seed = data.Seed, Drift = data.Drift, EventsPerSecond = data.EventsPerSecond ?? DefaultEventsPerSecond }, data.Events ?? DefaultEvents)
            : () => data.Open(line => Console.Error.WriteLine("  " + line));
        var replay = new FreshnessReplay(open, options, dataName)
        {
            Log = line => { progress.Clear(); Console.WriteLine(line); },
            Progress = progress.Update,
        };
        var report = replay.Run();
        progress.Clear();

        string json = Path.Combine(outDir, "report.json");
        report.WriteJson(json);
        PrintTable(report);
        Console.WriteLine($"report  {json}");
        if (plots)
            foreach (var f in ReplayPlots.Write(report, outDir)) Console.WriteLine($"plot    {f}");
        return 0;
    }

    static void PrintTable(ReplayReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($"{r.ReplayEvents:N0} events replayed over {(r.ReplayEnd - r.ReplayStart) / 3600.0:F1} h of event time" +
                          (double.IsFinite(r.OptimumAuc) ? $"; optimum AUC (true probabilities) {r.OptimumAuc.ToString("F4", inv)}" : ""));
        Console.WriteLine($"{"mode",-6} {"AUC",8} {"logloss",8} {"calib",6} {"net MB",8} {"cpu s",7} {"adapter %",9} {"drops",6} {"wall s",7}");
        foreach (var m in r.Modes)
        {
            string mem = m.Live is { } l ? l.AdapterMemoryPctMax.ToString("F3", inv) : "-";
            string drops = m.Live is { } l2 ? l2.Drops.ToString(inv) : "-";
            Console.WriteLine($"{m.Name,-6} {m.Overall.Auc.ToString("F4", inv),8} {m.Overall.LogLoss.ToString("F4", inv),8} {m.Overall.Calibration.ToString("F3", inv),6} " +
                              $"{(m.Cost.NetworkBytes / 1e6).ToString("F2", inv),8} {m.Cost.CpuSeconds.ToString("F2", inv),7} {mem,9} {drops,6} {m.WallSeconds.ToString("F1", inv),7}");
        }
        var windows = r.Modes.Max(m => m.Windows.Count);
        if (windows > 0)
        {
            Console.WriteLine();
            Console.Write($"{"window (h)",10}");
            foreach (var m in r.Modes) Console.Write($" {m.Name,8}");
            Console.WriteLine($" {"optimum",8}");
            for (int i = 0; i < windows; i++)
            {
                var w0 = r.Modes[0].Windows.ElementAtOrDefault(i);
                Console.Write($"{((w0?.Start ?? 0) - r.ReplayStart) / 3600.0,10:F0}");
                foreach (var m in r.Modes) Console.Write($" {(m.Windows.ElementAtOrDefault(i)?.Metrics.Auc ?? double.NaN).ToString("F4", inv),8}");
                Console.WriteLine($" {(w0?.OptimumAuc ?? double.NaN).ToString("F4", inv),8}");
            }
        }
        var stale = r.Mode(UpdateMode.Stale);
        var delta = r.Mode(UpdateMode.Delta);
        var live = r.Mode(UpdateMode.Live);
        if (live is not null)
        {
            Console.WriteLine();
            if (stale is not null) Console.WriteLine($"live − stale AUC  {(live.Overall.Auc - stale.Overall.Auc).ToString("+0.0000;-0.0000", inv)}  (target ≥ +0.0050)");
            if (delta is not null)
            {
                Console.WriteLine($"live − delta AUC  {(live.Overall.Auc - delta.Overall.Auc).ToString("+0.0000;-0.0000", inv)}  (target ≥ 0)");
                Console.WriteLine($"live / delta CPU  {(live.Cost.CpuSeconds / delta.Cost.CpuSeconds).ToString("F2", inv)}x  (target ≤ 0.5x); network {live.Cost.NetworkBytes} vs {delta.Cost.NetworkBytes} bytes");
            }
            if (live.Live is { } l) Console.WriteLine($"adapter memory   max {l.AdapterMemoryPctMax.ToString("F4", inv)} % of table bytes (budget {l.AdapterBudgetPct.ToString("F4", inv)} %; target ≤ 1 %)");
        }
    }

    /// <summary>A one-line progress bar on stderr (redrawn in place; cleared before any other output).</summary>
    sealed class ProgressBar
    {
        bool _shown;
        readonly bool _interactive = !Console.IsErrorRedirected;

        public void Update(UpdateMode mode, double fraction)
        {
            int width = 30, filled = (int)Math.Round(Math.Clamp(fraction, 0, 1) * width);
            string line = $"{mode.ToString().ToLowerInvariant(),-6} [{new string('#', filled)}{new string('.', width - filled)}] {fraction * 100,5:F1} %";
            if (_interactive) { Console.Error.Write("\r" + line); _shown = true; }
            else if ((int)(fraction * 100) % 25 == 0) Console.Error.WriteLine(line);
        }

        public void Clear()
        {
            if (!_shown) return;
            Console.Error.Write("\r" + new string(' ', 60) + "\r");
            _shown = false;
        }
    }
}
