using LiveDlrm.Files;
using System.Diagnostics;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Metrics;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Training;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Replay;

/// <summary>
/// The freshness replay: a timestamped stream is replayed in event time through the update modes, every mode
/// serving a copy of the same base model (trained with <see cref="DlrmTrainer"/> on the stream's prefix, or
/// loaded). Evaluation is progressive: each batch of events is scored by the serving model as it is at that
/// event time; the events' labels become usable <see cref="ReplayOptions.LabelDelaySeconds"/> later (and never
/// before the batch was scored). The replay itself is single-threaded per mode except for the live mode's
/// trainer thread, which the replay waits for after each label delivery (event time is simulated much faster
/// than real time; a trainer that keeps up in wall time would be caught up at every event, which is what the
/// wait models — its speed is reported so that assumption can be checked).
/// </summary>
internal sealed class FreshnessReplay
{
    readonly Func<IEventSource> _open;
    readonly ReplayOptions _options;
    readonly string _dataName;

    public ILogger Logger { get; init; } = NullLogger.Instance;
    /// <summary>Progress per mode: (mode, fraction of the replayed events done).</summary>
    public Action<UpdateMode, double>? Progress { get; init; }
    /// <summary>Progress per run of a mode, named by its sweep point ("delta 10 min") or its mode: (name, fraction).</summary>
    public Action<string, double>? PointProgress { get; init; }

    public FreshnessReplay(Func<IEventSource> openSource, ReplayOptions options, string dataName)
    {
        _open = openSource ?? throw new ArgumentNullException(nameof(openSource));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _options.Validate();
        _dataName = dataName;
    }

    /// <summary>Report windows one jump of event time may open; more means a bad timestamp, not a quiet hour.</summary>

    public ReplayReport Run() => Run(null);

    /// <summary>The cost/accuracy sweep: one base model (trained once, or loaded), stale once as the reference, then
    /// every point through the replay's own delta or live mode on the same stream. Each delta point continues its own
    /// fork of the base trainer (<see cref="DlrmTrainer.Fork"/>), so every point starts from the same state a single
    /// replay's delta would. The report's modes hold stale and the points at the options' own sync interval and
    /// budget (what <c>--mode all</c> would give); <see cref="ReplayReport.Sweep"/> holds every point.</summary>
    public ReplayReport RunSweep(IReadOnlyList<SweepPoint> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        if (points.Count == 0) throw new ArgumentException("a sweep needs at least one point", nameof(points));
        foreach (var p in points) p.Apply(_options).Validate();
        return Run(points);
    }

    ReplayReport Run(IReadOnlyList<SweepPoint>? sweep)
    {
        TorchRuntime.EnsureInitialised();
        // Update costs are thread CPU clocks: libtorch must not spread a step over its own pool.
        TorchSharp.torch.set_num_threads(1);
        using var source = _open();
        var layout = source.Schema.Layout;

        var (total, prefix, replayFirst, last) = CountPrefix(source);
        if (total == 0) throw new NoResultException("the stream has no valid events: nothing to replay");
        if (_options.ModelPath is null && prefix < 1)
            throw new NoResultException($"the base prefix selects 0 of the stream's {total} events: no events to train the base model on (use a larger --base-prefix, or --model)");
        if (total - prefix < 1) throw new NoResultException($"the stream has {total} events and the base prefix takes {prefix}: nothing left to replay");
        _windowSeconds = _options.WindowSeconds > 0 ? _options.WindowSeconds : ReplayWindows.AutoWindowSeconds(last - replayFirst);
        Logger.LogInformation("stream: {Total:N0} events; base prefix {Prefix:N0}, replaying {Replayed:N0} over {Span} in windows of {Window}{Auto}",
                              total, prefix, total - prefix, SpanText(last - replayFirst), ReplayWindows.Describe(_windowSeconds), _options.WindowSeconds == 0 ? " (auto)" : "");

        DlrmModel? baseModel = null;
        DlrmTrainer? baseTrainer = null;
        var results = new List<ModeResult>();
        List<SweepResult>? sweepResults = null;
        long baseEvents = 0;
        double baseSeconds = 0;
        try
        {
            var sw = Stopwatch.StartNew();
            if (_options.ModelPath is { } path)
            {
                baseModel = Checkpoint.Load(path, ModelCopy.InlineCpuBackend());
                baseModel.Config.CheckLayout(layout);
                Logger.LogInformation("base model: {Path}", path);
            }
            else
            {
                var config = DlrmConfig.ForLayout(layout, _options.BottomMlp, _options.TopMlp);
                baseModel = DlrmModel.Create(config, _options.ModelSeed, ModelCopy.InlineCpuBackend());
                baseTrainer = new DlrmTrainer(baseModel, _options.FullTrainer);
                var acc = new MetricAccumulator();
                for (int epoch = 0; epoch < _options.BaseEpochs; epoch++)
                {
                    acc.Reset();
                    var scores = new float[_options.ServeBatch];
                    foreach (var batch in Batches(source, 0, prefix, _options.ServeBatch))
                    {
                        baseTrainer.Step(batch, scores);
                        acc.Add(scores.AsSpan(0, batch.Count), batch.Labels);
                        baseEvents += batch.Count;
                    }
                    Logger.LogInformation("base model: epoch {Epoch}/{Epochs} on {Events:N0} events, progressive AUC {Auc:F4}", epoch + 1, _options.BaseEpochs, prefix, acc.Auc());
                }
            }
            baseSeconds = sw.Elapsed.TotalSeconds;

            WarmUp(source, baseModel, baseTrainer, prefix, total, sweep is not null ? new[] { UpdateMode.Stale, UpdateMode.Live, UpdateMode.Delta } : _options.Modes);
            if (sweep is not null)
            {
                sweepResults = RunSweepPoints(source, baseModel, baseTrainer, prefix, total - prefix, sweep, out var stale);
                results.Add(stale);
            }
            // Delta continues the base trainer (its optimizer state, as a training cluster would), so it runs last.
            var order = sweep is not null ? new List<UpdateMode>() : _options.Modes.OrderBy(m => m == UpdateMode.Delta ? 1 : 0).ToList();
            foreach (var mode in order)
            {
                using ModeRunner runner = mode switch
                {
                    UpdateMode.Stale => new StaleRunner(baseModel),
                    UpdateMode.Live => new LiveRunner(baseModel, baseTrainer, _options),
                    _ => new DeltaRunner(baseModel, baseTrainer, _options),
                };
                results.Add(RunMode(source, mode, runner, prefix, total - prefix));
            }
        }
        finally
        {
            baseTrainer?.Dispose();
            baseModel?.Dispose();
        }

        var plain = results.FirstOrDefault(r => r.Mode == UpdateMode.Stale);
        if (sweepResults is not null)
        {
            sweepResults = sweepResults.Select(p => p with { Result = WithServingExtra(p.Result, plain) }).ToList();
            // The modes of a plain `--mode all` run: stale, and the points at the options' own interval and budget.
            results = [plain!, .. sweepResults.Where(p => p.Point.Mode == UpdateMode.Delta && p.Point.SyncIntervalSeconds == _options.SyncIntervalSeconds
                                                              || p.Point.Mode == UpdateMode.Live && p.Point.BudgetFraction == _options.OnlineTrainer.Adapter.BudgetFraction)
                                              .Select(p => p.Result)];
        }
        else
        {
            results = _options.Modes.Select(m => results.First(r => r.Mode == m)).ToList();
            results = results.Select(r => WithServingExtra(r, plain)).ToList();
        }
        var first = results[0];
        return new ReplayReport
        {
            Data = _dataName,
            PrefixEvents = prefix,
            ReplayEvents = total - prefix,
            ReplayStart = first.Windows.Count > 0 ? first.Windows[0].Start : 0,
            ReplayEnd = first.Windows.Count > 0 ? first.Windows[^1].End : 0,
            WindowSeconds = _windowSeconds,
            BaseTrainEvents = baseEvents,
            BaseTrainSeconds = baseSeconds,
            OptimumAuc = _optimumAuc,
            Options = _options,
            Modes = results,
            Sweep = sweepResults,
        };
    }

    /// <summary>Live's serving-side work (the adapter term in every lookup, keeping the activations with each
    /// request) is part of its cost: its scoring CPU beyond plain serving of the same events (stale's).</summary>
    static ModeResult WithServingExtra(ModeResult result, ModeResult? plain) =>
        result.Mode == UpdateMode.Live && plain is not null
            ? result with { Cost = result.Cost with { ServingExtraCpuSeconds = Math.Max(0, result.Cost.ServeCpuSeconds - plain.Cost.ServeCpuSeconds) } }
            : result;

    List<SweepResult> RunSweepPoints(IEventSource source, DlrmModel baseModel, DlrmTrainer? baseTrainer, long prefix, long replayEvents,
                                     IReadOnlyList<SweepPoint> points, out ModeResult stale)
    {
        using (var runner = new StaleRunner(baseModel)) stale = RunMode(source, UpdateMode.Stale, runner, prefix, replayEvents);
        var results = new List<SweepResult>();
        foreach (var point in points)
        {
            var options = point.Apply(_options);
            Logger.LogInformation("sweep: {Point}", point.Label);
            if (point.Mode == UpdateMode.Live)
            {
                LiveRunner runner;
                try { runner = new LiveRunner(baseModel, baseTrainer, options); }
                catch (ArgumentException e) when (e.ParamName == "adapters")
                {
                    throw new NoResultException($"sweep point '{point.Label}': the tables are too small for an adapter under that budget ({e.Message.Split(" (")[0]})");
                }
                using (runner) results.Add(new SweepResult(point, RunMode(source, UpdateMode.Live, runner, prefix, replayEvents, point.Label)));
            }
            else if (point.Mode == UpdateMode.Delta)
            {
                // Each delta point continues its own fork of the base trainer, so all start from the same state.
                using var model = baseTrainer is null ? null : ModelCopy.Clone(baseModel, ModelCopy.InlineCpuBackend());
                using var fork = model is null ? null : baseTrainer!.Fork(model);
                using var runner = new DeltaRunner(model ?? baseModel, fork, options);
                results.Add(new SweepResult(point, RunMode(source, UpdateMode.Delta, runner, prefix, replayEvents, point.Label)));
            }
            else throw new ArgumentException($"a sweep point is delta or live, not {point.Mode}", nameof(points));
        }
        return results;
    }

    /// <summary>Events each mode's warm-up runs (<see cref="WarmUp"/>): 256 live trainer steps at the replay's
    /// batch of 128, so rank adaptation (every 200 steps) runs too.</summary>
    internal const int WarmupEvents = 32_768;

    /// <summary>Runs each mode's code on scratch copies (discarded: nothing of the base model, its trainer or the
    /// measured passes changes) before the measured passes, so no mode's CPU includes compiling its code. Delta's
    /// trainer is warm anyway (the base model was trained by the same code, on this thread), and without this
    /// live's was not: on the visit world, JIT compilation and the runtime's first-call work on the trainer thread
    /// were about 60 % of its CPU. A long-running server pays them once.</summary>
    void WarmUp(IEventSource source, DlrmModel baseModel, DlrmTrainer? baseTrainer, long prefix, long total, IReadOnlyCollection<UpdateMode> modes)
    {
        long from = prefix >= WarmupEvents ? prefix - WarmupEvents : 0, to = Math.Min(total, from + WarmupEvents);
        if (to <= from) return;
        var quiet = _options with { OnlineTrainer = _options.OnlineTrainer with { Logger = NullLogger.Instance } };
        var scores = new float[_options.ServeBatch];
        var sw = Stopwatch.StartNew();
        foreach (var mode in new[] { UpdateMode.Stale, UpdateMode.Live, UpdateMode.Delta }.Where(modes.Contains))
        {
            using var model = mode == UpdateMode.Delta && baseTrainer is not null ? ModelCopy.Clone(baseModel, ModelCopy.InlineCpuBackend()) : null;
            using var fork = model is null ? null : baseTrainer!.Fork(model);
            using ModeRunner runner = mode switch
            {
                UpdateMode.Stale => new StaleRunner(baseModel),
                UpdateMode.Live => new LiveRunner(baseModel, baseTrainer, quiet),
                _ => new DeltaRunner(model ?? baseModel, fork, quiet),
            };
            foreach (var batch in Batches(source, from, to, _options.ServeBatch))
            {
                long now = batch.Timestamps[0];
                runner.AdvanceTo(now);
                runner.Score(batch, scores);
                runner.Learn(batch, now);
            }
        }
        Logger.LogInformation("warm-up: {Events:N0} events through each mode on scratch copies ({Seconds:F1} s)", to - from, sw.Elapsed.TotalSeconds);
    }

    double _optimumAuc = double.NaN;
    long _windowSeconds;

    static string SpanText(long seconds)
    {
        var (unit, unitSeconds) = ReplayWindows.Unit(seconds);
        return $"{(seconds / unitSeconds).ToString("F1", System.Globalization.CultureInfo.InvariantCulture)} {unit}";
    }

    /// <summary>Counts the stream and its base prefix; also the first replayed and the last timestamp.</summary>
    (long Total, long Prefix, long ReplayFirst, long Last) CountPrefix(IEventSource source)
    {
        source.Reset();
        var batch = new EventBatch(source.Schema.Layout, 4096);
        long total = 0, beforeTime = 0, previous = long.MinValue, firstTime = 0;
        var times = new List<long>();   // one timestamp per batch read, to find the first replayed one afterwards
        while (source.Read(batch) > 0)
        {
            var ts = batch.Timestamps;
            for (int i = 0; i < ts.Length; i++)
            {
                if (ts[i] < previous)
                    throw new DataFormatException($"{_dataName}: event {total + i} has timestamp {ts[i]} before the previous event's {previous}; a replay needs events in time order");
                previous = ts[i];
                if (_options.BasePrefixTime is { } cut && ts[i] < cut) beforeTime++;
            }
            if (total == 0 && batch.Count > 0) firstTime = ts[0];
            total += batch.Count;
        }
        long prefix = _options.BasePrefixTime is not null ? beforeTime
                    : _options.BasePrefixFraction is { } f ? (long)Math.Floor(f * total)
                    : 0;
        if (total > 0 && ReplayWindows.ImplausibleSpan(firstTime, previous, source.Schema.TimestampUnit) is { } error)
            throw new DataFormatException($"{_dataName}: {error}");
        long replayFirst = prefix < total ? TimestampAt(source, prefix) : previous;
        return (total, prefix, replayFirst, previous);
    }

    static long TimestampAt(IEventSource source, long index)
    {
        foreach (var batch in Batches(source, index, index + 1, 1)) return batch.Timestamps[0];
        return 0;
    }

    /// <summary>Events [<paramref name="from"/>, <paramref name="to"/>) of the stream in batches of
    /// <paramref name="size"/>, request id = event index. The yielded batch is reused: consume it before moving on.</summary>
    static IEnumerable<EventBatch> Batches(IEventSource source, long from, long to, int size)
    {
        source.Reset();
        var read = new EventBatch(source.Schema.Layout, size);
        var output = new EventBatch(source.Schema.Layout, size);
        long index = 0;
        while (index < to && source.Read(read) > 0)
        {
            int start = 0, end = read.Count;
            if (index < from) { long skip = Math.Min(end, from - index); start = (int)skip; index += skip; }
            end = (int)Math.Min(end, start + (to - index));
            while (start < end)
            {
                int take = Math.Min(end - start, size - output.Count);
                int row0 = output.Count;
                output.AppendRange(read, start, take);
                for (int i = 0; i < take; i++) output.SetRequestId(row0 + i, index + i);
                index += take;
                start += take;
                if (output.IsFull) { yield return output; output.Clear(); }
            }
        }
        if (output.Count > 0) yield return output;
    }

    ModeResult RunMode(IEventSource source, UpdateMode mode, ModeRunner runner, long prefix, long replayEvents, string? label = null)
    {
        var sw = Stopwatch.StartNew();
        double serveCpu = 0;
        var layout = source.Schema.Layout;
        bool hasTruth = layout.HasTrueProbabilities;
        var overall = new MetricAccumulator(1 << 16);
        var overallTruth = new MetricAccumulator(hasTruth ? 1 << 16 : 16);
        var window = new MetricAccumulator();
        var windowTruth = new MetricAccumulator();
        var windows = new List<WindowResult>();
        var pending = new Queue<(long Due, EventBatch Batch)>();
        var spare = new Stack<EventBatch>();
        var scores = new float[_options.ServeBatch];
        long start = long.MinValue, windowStart = 0, windowEnd = 0, done = 0, positives = 0;
        long length = _windowSeconds;
        int lastPercent = -1;

        // A window closes at its end only with enough events and both labels (else its AUC is undefined or noise);
        // otherwise it runs on to the next boundary. The rule reads only the events, so every mode gets the same
        // windows. A thin last window is kept if its AUC is defined.
        bool TryCloseWindow(long end, bool last)
        {
            long n = window.Count;
            bool bothLabels = positives > 0 && positives < n;
            if (!bothLabels || (n < _options.MinWindowEvents && !last)) return false;
            var w = new WindowResult(windowStart, end, window.Summary(), hasTruth ? windowTruth.Auc() : double.NaN);
            windows.Add(runner.Describe(w));
            window.Reset();
            windowTruth.Reset();
            positives = 0;
            return true;
        }

        foreach (var batch in Batches(source, prefix, long.MaxValue, _options.ServeBatch))
        {
            long now = batch.Timestamps[0];
            if (start == long.MinValue) { start = now; windowStart = now; windowEnd = now + length; }
            // Labels that have arrived by now train first, then syncs due by now land: the model that scores this
            // batch is the one the mode would serve at this event time.
            while (pending.Count > 0 && pending.Peek().Due <= now)
            {
                var (_, labelled) = pending.Dequeue();
                runner.Learn(labelled, now);
                spare.Push(labelled);
            }
            runner.AdvanceTo(now);
            double c0 = ThreadCpuClock.Now();
            runner.Score(batch, scores);
            serveCpu += ThreadCpuClock.Now() - c0;

            var ts = batch.Timestamps;
            var labels = batch.Labels;
            var truth = batch.TrueProbabilities;
            for (int i = 0; i < batch.Count; i++)
            {
                if (ts[i] >= windowEnd)
                {
                    // Boundaries crossed at once: empty windows in a gap are skipped arithmetically, not one by one.
                    long crossed = (ts[i] - windowEnd) / length + 1;
                    if (window.Count == 0 || TryCloseWindow(windowEnd, last: false)) windowStart = windowEnd + (crossed - 1) * length;
                    windowEnd += crossed * length;
                }
                window.Add(scores[i], labels[i]);
                if (labels[i] > 0.5f) positives++;
                overall.Add(scores[i], labels[i]);
                if (hasTruth) { windowTruth.Add(truth[i], labels[i]); overallTruth.Add(truth[i], labels[i]); }
            }

            var copy = spare.Count > 0 ? spare.Pop() : new EventBatch(layout, _options.ServeBatch);
            copy.Clear();
            copy.AppendRange(batch, 0, batch.Count);
            pending.Enqueue((SaturatingMath.Add(ts[^1], _options.LabelDelaySeconds), copy));

            done += batch.Count;
            int percent = (int)(100 * done / Math.Max(1, replayEvents));
            if (percent != lastPercent)
            {
                lastPercent = percent;
                Progress?.Invoke(mode, (double)done / replayEvents);
                PointProgress?.Invoke(label ?? mode.ToString().ToLowerInvariant(), (double)done / replayEvents);
            }
        }
        if (window.Count > 0) TryCloseWindow(windowEnd, last: true);
        if (hasTruth) _optimumAuc = overallTruth.Auc();
        var result = runner.Finish(new ModeResult(mode, overall.Summary(), windows, runner.Cost, 0));
        result = result with { WallSeconds = sw.Elapsed.TotalSeconds, Cost = result.Cost with { ServeCpuSeconds = serveCpu } };
        Logger.LogInformation("{Mode,-14} {Overall}  cpu {Cpu:F2} s  network {NetworkMb:F2} MB  ({Wall:F1} s wall)", label ?? result.Name, result.Overall, result.Cost.CpuSeconds, result.Cost.NetworkBytes / 1e6, result.WallSeconds);
        return result;
    }
}
