using System.CommandLine;
using System.Globalization;
using LiveDlrm.CommandLine;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Replay;
using LiveDlrm.Training;

namespace LiveDlrm.Cli.Commands;

internal sealed class ReplayCommand : CliCommand
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
    static double F(float v) => (double)(decimal)v;

    readonly Option<string> _mode = Opt.Choice("--mode", "update mode; all = the three side by side on the same stream", "all", "stale", "delta", "live", "all");
    readonly DataSourceArgs _data = new(DefaultEvents, defaultEventsPerSecond: DefaultEventsPerSecond);
    readonly Option<string?> _basePrefix = Opt.Text("--base-prefix", "base model trained on this first fraction of the stream, or on the events before a unix time", D.BasePrefixFraction?.ToString(CultureInfo.InvariantCulture), "F|UNIXTIME");
    readonly Option<string?> _model = Opt.Text("--model", "serve this checkpoint as the base instead (replays the whole stream unless --base-prefix)", helpName: "DIR");
    readonly Option<int> _baseEpochs = Opt.Int("--base-epochs", "passes over the prefix for the base model", 1, 1, 100);
    // Durations of event time: at most ten years (sums with event times saturate in the engine regardless).
    const long MaxSeconds = 10L * 366 * 86400;
    readonly Option<long> _syncInterval = Opt.Long("--sync-interval", "delta: seconds of event time between syncs", D.SyncIntervalSeconds, 1, MaxSeconds);
    readonly Option<long> _syncDelay = Opt.Long("--sync-delay", "delta: seconds until a sync lands on the server", D.SyncDelaySeconds, 0, MaxSeconds);
    readonly Option<long> _labelDelay = Opt.Long("--label-delay", "seconds of event time until a label can be used", D.LabelDelaySeconds, 0, MaxSeconds);
    readonly Option<string?> _window = Opt.Text("--window", "report window: auto = 20-48 round windows over the replayed span, or event seconds", "auto", "auto|SECONDS");
    readonly Option<int> _minWindowEvents = Opt.Int("--min-window-events", "windows with fewer events (or one label class) merge into the next", D.MinWindowEvents, 1);
    readonly Option<int> _batch = Opt.Int("--batch", "events scored together, and the delta trainer's minibatch", D.ServeBatch, 1, 1 << 20);
    readonly Option<int> _onlineBatch = Opt.Int("--online-batch", "live trainer minibatch", D.OnlineTrainer.BatchSize, 1, 1 << 20);
    readonly Option<int> _rank = Opt.Int("--rank", "live adapters: initial rank", D.OnlineTrainer.Adapter.InitialRank, 1, 1024);
    readonly Option<int> _minRank = Opt.Int("--min-rank", "live adapters: minimum rank", D.OnlineTrainer.Adapter.MinRank, 1, 1024);
    readonly Option<int> _maxRank = Opt.Int("--max-rank", "live adapters: maximum rank", D.OnlineTrainer.Adapter.MaxRank, 1, 1024);
    readonly Option<int> _rankInterval = Opt.Int("--rank-interval", "live: steps between rank adaptations, 0 = off", D.OnlineTrainer.Adapter.RankAdaptInterval, 0);
    readonly Option<double> _energy = Opt.Double("--energy", "live: rank adaptation keeps the fewest directions holding at least this share of the energy", D.OnlineTrainer.Adapter.EnergyToKeep, 1e-6, 1);
    readonly Option<double> _growThreshold = Opt.Double("--grow-threshold", "live: rank adaptation grows when the last direction holds more than this", D.OnlineTrainer.Adapter.GrowThreshold, 0, 1);
    readonly Option<double> _budget = Opt.Double("--budget", "live: adapter bytes as a fraction of table bytes (see --budget-scope)", D.OnlineTrainer.Adapter.BudgetFraction, 1e-6, 1);
    readonly Option<double> _lrA = Opt.Double("--lr-a", "live: adapter learning rate of A", F(D.OnlineTrainer.Adapter.LearningRateA), 0, 100);
    readonly Option<double> _lrB = Opt.Double("--lr-b", "live: adapter learning rate of B", F(D.OnlineTrainer.Adapter.LearningRateB), 0, 100);
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim of a trained base model (bottom MLP [max(32, D), D])", D.BottomMlp[^1], 1, 1024);
    readonly Option<string> _budgetScope = Opt.Choice("--budget-scope", "live: --budget over all tables jointly (small tables funded from the total) or per table", D.OnlineTrainer.JointBudget ? "joint" : "table", "joint", "table");
    readonly Option<double> _smallTableBudget = Opt.Double("--small-table-budget", "live, joint budget: a tiny table's adapter may take up to M × its own bytes", D.OnlineTrainer.SmallTableBudgetMultiple, 1e-6, 16);
    readonly Option<double> _adagradInit = Opt.Double("--adagrad-init", "live: Adagrad accumulator a new adapter row starts with", F(D.OnlineTrainer.Adapter.AdagradInitialAccumulator), 0, 1e6);
    readonly Option<double> _hotRows = Opt.Double("--hot-rows", "live: share of each adapter's budget for hot rows served from W itself (0 = off; docs/lora.md)", D.OnlineTrainer.Adapter.HotRowFraction, 0, 0.99);
    readonly Option<string> _inPlace = Opt.Choice("--in-place", "live: rows an adapter cannot hold (on), or every row of every adapted table (all), are trained in W itself by row-wise Adagrad (docs/lora.md)",
        !D.OnlineTrainer.Adapter.InPlaceRows ? "off" : D.OnlineTrainer.Adapter.InPlaceOnly ? "all" : "on", "on", "all", "off");
    readonly Option<double> _inPlaceLr = Opt.Double("--in-place-lr", "live: row-wise Adagrad learning rate of rows trained in place (default: --lr)", F(D.OnlineTrainer.Adapter.InPlaceLearningRate), 1e-9, 100);
    readonly Option<string> _optimizer = Opt.Choice("--optimizer", "live: adapter optimizer", "adagrad", "adagrad", "sgd");
    readonly Option<bool> _noReuse = Opt.Flag("--no-reuse", "live: re-pool and re-run the dense forward under autograd at training time instead of reusing the serving forward (the reference path)");
    readonly Option<string> _rowState = Opt.Choice("--row-state", "live: an adapter row starts from its base row's Adagrad state (base) or from --adagrad-init (fresh)", D.WarmRowState ? "base" : "fresh", "base", "fresh");
    readonly Option<string> _lastLayer = Opt.Choice("--last-layer", "live: also learn an additive update of the top MLP's last layer", D.OnlineTrainer.AdaptLastLayer ? "on" : "off", "on", "off");
    readonly Option<double> _lastLayerLr = Opt.Double("--last-layer-lr", "live: its Adagrad learning rate", F(D.OnlineTrainer.LastLayerLearningRate), 1e-9, 10);
    readonly Option<double> _trainFraction = Opt.Double("--train-fraction", "live: fraction of served requests kept and trained on (chosen by request-id hash)", D.OnlineTrainer.TrainFraction, 1e-6, 1);
    readonly Option<double> _lr = Opt.Double("--lr", "base + delta trainer: embedding learning rate", F(D.FullTrainer.EmbeddingLearningRate), 1e-9, 100);
    readonly Option<double> _denseLr = Opt.Double("--dense-lr", "base + delta trainer: dense learning rate", D.FullTrainer.DenseLearningRate, 1e-9, 100);
    readonly SyntheticWorldArgs _world = new(DefaultWorld);
    readonly Option<string> _liveBackend = Opt.Choice("--live-backend",
        "live: pool the base rows on the CPU kernels or on UPMEM DPUs (real ones when the SDK build finds them, else the emulation); the host adds the adapter term and pushes merges to MRAM",
        "cpu", "cpu", "pim");
    readonly Option<int> _pimDpus = Opt.Int("--pim-dpus", "with --live-backend pim: DPUs per table", 64, 1, 2560);
    readonly Option<string?> _out = Opt.Text("--out", "report.json and plots", Path.Combine("artifacts", "replay"), "DIR");
    readonly Option<bool> _noPlots = Opt.Flag("--no-plots", "skip the PNG plots");
    readonly Option<bool> _sweep = Opt.Flag("--sweep",
        "cost/accuracy frontier: delta at sync intervals 1, 5, 10, 30, 60 min (delay scaled alike) and live at budgets 0.25, 0.5, 1, 2 % on the same stream and base model; writes pareto.png and report.json's sweep[]");

    public ReplayCommand() : base("replay", "replay a timestamped stream in event time: stale vs delta-sync vs live LoRA adapters")
    {
        Add(_mode);
        _data.AddTo(this);
        foreach (var o in new Option[] { _basePrefix, _model, _baseEpochs, _syncInterval, _syncDelay, _labelDelay, _window, _minWindowEvents, _batch, _onlineBatch,
                                         _rank, _minRank, _maxRank, _rankInterval, _energy, _growThreshold, _budget, _lrA, _lrB, _dim, _budgetScope,
                                         _smallTableBudget, _adagradInit, _hotRows, _inPlace, _inPlaceLr, _optimizer, _noReuse, _rowState, _lastLayer, _lastLayerLr, _trainFraction, _lr, _denseLr })
            Add(o);
        _world.AddTo(this);
        Add(_liveBackend); Add(_pimDpus); Add(_out); Add(_noPlots); Add(_sweep);
    }

    /// <summary>Files the replay writes into its output folder.</summary>
    static readonly string[] Plots = ["auc.png", "live-rank-memory.png", "pareto.png"];

    protected override int Run(ParseResult result)
    {
        bool sweep = result.GetValue(_sweep);
        if (sweep)
            foreach (var o in new Option[] { _mode, _syncInterval, _syncDelay, _budget })
                if (Given(result, o)) throw new UsageException($"{o.Name} does not apply with --sweep, which sets the modes, sync intervals and budgets itself");
        var modes = result.GetValue(_mode) switch
        {
            "stale" => [UpdateMode.Stale],
            "delta" => [UpdateMode.Delta],
            "live" => [UpdateMode.Live],
            _ => new[] { UpdateMode.Stale, UpdateMode.Delta, UpdateMode.Live },
        };
        var data = _data.Get(result);
        if (data.IsSynthetic && data.EventsPerSecond is null) data = data with { EventsPerSecond = DefaultEventsPerSecond };
        if (!data.IsSynthetic && _world.AnyGiven(result))
            throw new UsageException("--users/--items/--new-items/--hashed-rows/--bursts-* apply to --data synthetic only");
        var world = _world.Apply(result, DefaultWorld);
        string? model = result.GetValue(_model);
        if (model is not null && !Directory.Exists(model)) throw new UsageException($"--model: directory '{model}' does not exist");
        // The checkpoint's manifest is checked now: a bad --model fails before the stream is read.
        if (model is not null)
            try { Checkpoint.ReadManifest(model, logger: CliLogging.For("replay")); }
            catch (CheckpointException e) { throw new UsageException($"--model: {e.Message}"); }

        double? prefixFraction = model is null ? D.BasePrefixFraction : null;
        long? prefixTime = null;
        if (Given(result, _basePrefix) && result.GetValue(_basePrefix) is { } prefixText)
        {
            if (!double.TryParse(prefixText, NumberStyles.Float, CultureInfo.InvariantCulture, out double p) || !(p >= 0))
                throw new UsageException($"--base-prefix: '{prefixText}' is neither a fraction in [0, 1) nor a unix time");
            if (p < 1) prefixFraction = p;
            else if (p == Math.Floor(p)) { prefixTime = (long)p; prefixFraction = null; }
            else throw new UsageException($"--base-prefix: '{prefixText}' is neither a fraction in [0, 1) nor a whole unix time");
        }

        var defaults = new ReplayOptions();
        var adapterDefaults = defaults.OnlineTrainer.Adapter;
        var adapter = adapterDefaults with
        {
            InitialRank = result.GetValue(_rank),
            MaxRank = result.GetValue(_maxRank),
            MinRank = result.GetValue(_minRank),
            RankAdaptInterval = result.GetValue(_rankInterval),
            EnergyToKeep = result.GetValue(_energy),
            GrowThreshold = result.GetValue(_growThreshold),
            BudgetFraction = result.GetValue(_budget),
            LearningRateA = Given(result, _lrA) ? (float)result.GetValue(_lrA) : adapterDefaults.LearningRateA,
            LearningRateB = Given(result, _lrB) ? (float)result.GetValue(_lrB) : adapterDefaults.LearningRateB,
            AdagradInitialAccumulator = Given(result, _adagradInit) ? (float)result.GetValue(_adagradInit) : adapterDefaults.AdagradInitialAccumulator,
            Optimizer = result.GetValue(_optimizer) == "sgd" ? AdapterOptimizer.Sgd : AdapterOptimizer.Adagrad,
            HotRowFraction = result.GetValue(_hotRows),
            InPlaceRows = result.GetValue(_inPlace) != "off",
            InPlaceOnly = result.GetValue(_inPlace) == "all",
            InPlaceLearningRate = Given(result, _inPlaceLr) ? (float)result.GetValue(_inPlaceLr)
                : Given(result, _lr) ? (float)result.GetValue(_lr) : adapterDefaults.InPlaceLearningRate,
        };
        if (adapter.InitialRank > adapter.MaxRank) throw new UsageException($"--rank {adapter.InitialRank} exceeds --max-rank {adapter.MaxRank}");
        if (adapter.MinRank > adapter.MaxRank) throw new UsageException($"--min-rank {adapter.MinRank} exceeds --max-rank {adapter.MaxRank}");
        if (adapter.InitialRank < adapter.MinRank) throw new UsageException($"--rank {adapter.InitialRank} is below --min-rank {adapter.MinRank}");
        var full = defaults.FullTrainer with
        {
            EmbeddingLearningRate = Given(result, _lr) ? (float)result.GetValue(_lr) : defaults.FullTrainer.EmbeddingLearningRate,
            DenseLearningRate = result.GetValue(_denseLr),
        };
        int dim = result.GetValue(_dim);
        var options = defaults with
        {
            Modes = modes,
            ModelPath = model,
            BasePrefixFraction = prefixFraction,
            BasePrefixTime = prefixTime,
            BaseEpochs = result.GetValue(_baseEpochs),
            BottomMlp = dim == defaults.BottomMlp[^1] ? defaults.BottomMlp : [Math.Max(defaults.BottomMlp[0], dim), dim],
            SyncIntervalSeconds = result.GetValue(_syncInterval),
            SyncDelaySeconds = result.GetValue(_syncDelay),
            LabelDelaySeconds = result.GetValue(_labelDelay),
            WindowSeconds = result.GetValue(_window) is "auto" or null ? 0
                : long.TryParse(result.GetValue(_window), NumberStyles.Integer, CultureInfo.InvariantCulture, out long w) && w >= 1 && w <= MaxSeconds ? w
                : throw new UsageException($"--window: '{result.GetValue(_window)}' is not auto or a whole number of seconds in [1, {MaxSeconds}]"),
            MinWindowEvents = result.GetValue(_minWindowEvents),
            ServeBatch = result.GetValue(_batch),
            FullTrainer = full,
            WarmRowState = result.GetValue(_rowState) == "base",
            OnlineTrainer = defaults.OnlineTrainer with
            {
                BatchSize = result.GetValue(_onlineBatch),
                ReuseForward = !result.GetValue(_noReuse),
                TrainFraction = result.GetValue(_trainFraction),
                AdaptLastLayer = result.GetValue(_lastLayer) == "on",
                LastLayerLearningRate = Given(result, _lastLayerLr) ? (float)result.GetValue(_lastLayerLr) : defaults.OnlineTrainer.LastLayerLearningRate,
                SmallTableBudgetMultiple = result.GetValue(_smallTableBudget),
                JointBudget = result.GetValue(_budgetScope) == "joint",
                Adapter = adapter,
                Logger = CliLogging.For("replay"),
            },
        };
        int pimDpus = result.GetValue(_pimDpus);
        if (result.GetValue(_liveBackend) == "pim")
            // Auto: real DPUs when the SDK build finds them, else the emulation; the choice is logged.
            options = options with
            {
                LiveBaseBackend = () => new LiveDlrm.Pim.PimEmbeddingBackend(new LiveDlrm.Pim.PimBackendOptions
                {
                    Backend = LiveDlrm.Pim.PimBackendKind.Auto, DpusPerTable = pimDpus,
                    Logger = CliLogging.For("pim"),
                }),
            };
        string outDir = result.GetValue(_out)!;
        bool plots = !result.GetValue(_noPlots);
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

        // A folder the user names is checked now (existing parent, not a file, not inside a checkpoint); the default
        // (artifacts/replay) is ours and created with its parents. Either is created only once there is a report.
        if (result.GetResult(_out) is { Implicit: false })
        {
            outDir = LiveDlrm.Files.OutputTarget.CheckDirectory("--out", outDir);
            if (Directory.Exists(outDir)) LiveDlrm.Files.OutputTarget.CheckFile("--out", Path.Combine(outDir, "report.json"), data.InputPaths());
        }
        CheckOwnOutputs(outDir, plots);
        string dataName = data.IsSynthetic ? $"synthetic (events {data.Events}, seed {data.Seed}, drift {data.Drift}, {data.EventsPerSecond} events/s, {world.Users} users, {world.InitialItems}+{world.MaxNewItems} items)" : data.Data;
        Console.WriteLine(sweep
            ? $"replay: {dataName}; sweep: stale, delta at {string.Join(", ", ReplaySweep.SyncIntervalsSeconds.Select(ReplaySweep.Minutes))}, live at budgets {string.Join(", ", ReplaySweep.BudgetFractions.Select(b => (b * 100).ToString("0.###", CultureInfo.InvariantCulture)))} %"
            : $"replay: {dataName}; modes {string.Join(", ", modes.Select(m => m.ToString().ToLowerInvariant()))}");
        Func<IEventSource> open = data.IsSynthetic
            ? () => new SyntheticEventSource(world with { Seed = data.Seed, Drift = data.Drift, EventsPerSecond = data.EventsPerSecond ?? DefaultEventsPerSecond }, data.Events ?? DefaultEvents)
            : () => data.Open(CliLogging.For("replay"));
        var report = Terminal.WithProgress(progress =>
        {
            var tasks = new Dictionary<string, Terminal.IProgressTask>();
            var replay = new FreshnessReplay(open, options, dataName)
            {
                Logger = CliLogging.For("replay"),
                PointProgress = (name, fraction) =>
                {
                    if (!tasks.TryGetValue(name, out var task)) tasks[name] = task = progress.Task(name, 100, "");
                    task.Report(fraction * 100, $"{name,-14} {fraction * 100,5:F1} %");
                },
            };
            var result = sweep ? replay.RunSweep(ReplaySweep.Points(options)) : replay.Run();
            foreach (var task in tasks.Values) task.Complete();
            return result;
        });

        Directory.CreateDirectory(outDir);
        string json = Path.Combine(outDir, "report.json");
        report.WriteJson(json);
        PrintTable(report);
        Console.WriteLine($"report  {json}");
        if (report.Sweep is not null) PrintSweep(report);
        if (plots)
        {
            foreach (var f in ReplayPlots.Write(report, outDir)) Console.WriteLine($"plot    {f}");
            if (report.Sweep is not null) Console.WriteLine($"plot    {ReplaySweep.WriteParetoPlot(report, outDir)}");
        }
        return 0;
    }

    /// <summary>The replay replaces its own outputs only: an existing report.json must be a replay report and an
    /// existing plot a PNG file; anything else in their place is refused before any work.</summary>
    static void CheckOwnOutputs(string outDir, bool plots)
    {
        if (!Directory.Exists(outDir)) return;
        string report = Path.Combine(outDir, "report.json");
        if (File.Exists(report) && !LooksLikeReplayReport(report))
            throw new LiveDlrm.Files.OutputException("--out", $"'{report}' exists and is not a replay report; not replacing it (move it or choose another --out)");
        if (!plots) return;
        foreach (var name in Plots)
        {
            string path = Path.Combine(outDir, name);
            if (Directory.Exists(path)) throw new LiveDlrm.Files.OutputException("--out", $"'{path}' is a directory; not replacing it");
            if (File.Exists(path) && !IsPng(path))
                throw new LiveDlrm.Files.OutputException("--out", $"'{path}' exists and is not a PNG plot; not replacing it (move it or choose another --out)");
        }
    }

    static bool LooksLikeReplayReport(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var doc = System.Text.Json.JsonDocument.Parse(stream);
            return doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object && doc.RootElement.TryGetProperty("modes", out _);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException or UnauthorizedAccessException) { return false; }
    }

    static bool IsPng(string path)
    {
        ReadOnlySpan<byte> signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        try
        {
            using var stream = File.OpenRead(path);
            Span<byte> head = stackalloc byte[8];
            return stream.ReadAtLeast(head, 8, throwOnEndOfStream: false) == 8 && head.SequenceEqual(signature);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    static void PrintSweep(ReplayReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        var stale = r.Mode(UpdateMode.Stale);
        Console.WriteLine();
        Console.WriteLine($"cost/accuracy sweep (stale AUC {stale?.Overall.Auc.ToString("F4", inv) ?? "-"}; cost = update CPU-seconds)");
        Terminal.WriteTable(
            [new("point", -14), new("AUC", 8), new("logloss", 8), new("cpu s", 8), new("net MB", 9), new("wall s", 7), new("frontier", -9)],
            r.Sweep!.Select(p => (IReadOnlyList<string>)
            [
                p.Point.Label, p.Result.Overall.Auc.ToString("F4", inv), p.Result.Overall.LogLoss.ToString("F4", inv),
                p.Result.Cost.CpuSeconds.ToString("F2", inv), (p.Result.Cost.NetworkBytes / 1e6).ToString("F2", inv), p.Result.WallSeconds.ToString("F1", inv),
                // On the frontier: no other point of either family is at least as accurate for at most the cost.
                r.Sweep!.Any(q => !ReferenceEquals(q, p) && q.Result.Overall.Auc >= p.Result.Overall.Auc && q.Result.Cost.CpuSeconds <= p.Result.Cost.CpuSeconds
                                  && (q.Result.Overall.Auc > p.Result.Overall.Auc || q.Result.Cost.CpuSeconds < p.Result.Cost.CpuSeconds)) ? "" : "yes",
            ]));
        var delta = r.Sweep!.Where(p => p.Point.Mode == UpdateMode.Delta).ToList();
        var live = r.Sweep!.Where(p => p.Point.Mode == UpdateMode.Live).ToList();
        if (delta.Count == 0 || live.Count == 0) return;
        // Live dominates delta where, for every delta point, some live point is at least as accurate at no more cost.
        var beaten = delta.Where(d => !live.Any(l => l.Result.Overall.Auc >= d.Result.Overall.Auc && l.Result.Cost.CpuSeconds <= d.Result.Cost.CpuSeconds)).ToList();
        Console.WriteLine(beaten.Count == 0
            ? "live dominates delta: every delta point has a live point at least as accurate for no more CPU"
            : $"live does not dominate delta at: {string.Join(", ", beaten.Select(d => d.Point.Label))} (no live point is as accurate for as little CPU)");
    }

    static void PrintTable(ReplayReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine();
        var (unit, unitSeconds) = ReplayWindows.Unit(r.ReplayEnd - r.ReplayStart);
        Console.WriteLine($"{r.ReplayEvents:N0} events replayed over {((r.ReplayEnd - r.ReplayStart) / unitSeconds).ToString("F1", inv)} {unit} of event time, windows of {ReplayWindows.Describe(r.WindowSeconds)}" +
                          (double.IsFinite(r.OptimumAuc) ? $"; optimum AUC (true probabilities) {r.OptimumAuc.ToString("F4", inv)}" : ""));
        Terminal.WriteTable(
            [new("mode", -6), new("AUC", 8), new("logloss", 8), new("calib", 6), new("net MB", 8), new("cpu s", 7), new("adapter %", 9), new("drops", 6), new("wall s", 7)],
            r.Modes.Select(m => (IReadOnlyList<string>)
            [
                m.Name, m.Overall.Auc.ToString("F4", inv), m.Overall.LogLoss.ToString("F4", inv), m.Overall.Calibration.ToString("F3", inv),
                (m.Cost.NetworkBytes / 1e6).ToString("F2", inv), m.Cost.CpuSeconds.ToString("F2", inv),
                m.Live is { } l ? l.AdapterMemoryPctMax.ToString("F3", inv) : "-", m.Live is { } l2 ? l2.Drops.ToString(inv) : "-",
                m.WallSeconds.ToString("F1", inv),
            ]));
        var table = ReplayWindows.ConsoleTable(r);
        if (table.Count > 0)
        {
            Console.WriteLine();
            foreach (var line in table) Console.WriteLine(line);
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
            if (live.Live is { } l)
            {
                Console.WriteLine($"adapter memory   max {l.AdapterMemoryPctMax.ToString("F4", inv)} % of table bytes (budget {l.AdapterBudgetPct.ToString("F4", inv)} %; target ≤ 1 %)");
                if (l.RowStateBytes > 0)
                    Console.WriteLine($"row state        {l.RowStateBytes} bytes, {l.RowStatePct.ToString("F4", inv)} % of table bytes (base rows' Adagrad state, outside the adapter budget)");
            }
        }
    }
}
