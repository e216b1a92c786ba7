using System.Globalization;
using ScottPlot;

namespace LiveDlrm.Replay;

/// <summary>One configuration of the cost/accuracy sweep: delta at a sync interval (and delay), or live at an
/// adapter budget. Everything else is the replay's options.</summary>
internal sealed record SweepPoint(UpdateMode Mode, long SyncIntervalSeconds, long SyncDelaySeconds, double BudgetFraction)
{
    public static SweepPoint Delta(long intervalSeconds, long delaySeconds) => new(UpdateMode.Delta, intervalSeconds, delaySeconds, double.NaN);
    public static SweepPoint Live(double budgetFraction) => new(UpdateMode.Live, 0, 0, budgetFraction);

    /// <summary>"delta 10 min" / "live 1 %".</summary>
    public string Label => Mode == UpdateMode.Delta
        ? $"delta {ReplaySweep.Minutes(SyncIntervalSeconds)}"
        : $"live {(BudgetFraction * 100).ToString("0.###", CultureInfo.InvariantCulture)} %";

    /// <summary>The replay's options with this point's setting.</summary>
    public ReplayOptions Apply(ReplayOptions options) => Mode == UpdateMode.Delta
        ? options with { SyncIntervalSeconds = SyncIntervalSeconds, SyncDelaySeconds = SyncDelaySeconds }
        : options with
        {
            OnlineTrainer = options.OnlineTrainer with { Adapter = options.OnlineTrainer.Adapter with { BudgetFraction = BudgetFraction } },
        };
}

/// <summary>What one sweep point measured: the mode's whole result (overall metrics, windows, costs).</summary>
internal sealed record SweepResult(SweepPoint Point, ModeResult Result);

/// <summary>
/// The cost/accuracy frontier (<c>livedlrm replay --sweep</c>): delta at several sync intervals and live at several
/// adapter budgets on the same stream and the same base model, through the replay's own modes
/// (<see cref="FreshnessReplay.RunSweep"/>). The update cost of a point is its <see cref="UpdateCost.CpuSeconds"/>
/// (delta: trainer + snapshot + apply; live: trainer thread + extra serving CPU), as in a single replay.
/// </summary>
internal static class ReplaySweep
{
    /// <summary>Delta's sync intervals: 1, 5, 10, 30 and 60 minutes of event time.</summary>
    public static readonly IReadOnlyList<long> SyncIntervalsSeconds = [60, 300, 600, 1800, 3600];
    /// <summary>Live's adapter budgets: 0.25, 0.5, 1 and 2 % of the table bytes.</summary>
    public static readonly IReadOnlyList<double> BudgetFractions = [0.0025, 0.005, 0.01, 0.02];

    /// <summary>The sweep's points. Each sync delay keeps the replay's delay-to-interval ratio (300 s of 600 s by
    /// default: half an interval), so a longer interval is also a later landing, as a bigger batch job would be.</summary>
    public static IReadOnlyList<SweepPoint> Points(ReplayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        double ratio = (double)options.SyncDelaySeconds / options.SyncIntervalSeconds;
        return [.. SyncIntervalsSeconds.Select(s => SweepPoint.Delta(s, (long)Math.Round(s * ratio))),
                .. BudgetFractions.Select(SweepPoint.Live)];
    }

    public static string Minutes(long seconds) =>
        seconds % 60 == 0 ? $"{seconds / 60} min" : $"{seconds.ToString(CultureInfo.InvariantCulture)} s";

    /// <summary>pareto.png: overall AUC against update CPU-seconds (log-scaled axis) for each family, each point
    /// labelled with its setting; stale's AUC (no update, no cost) in the title.</summary>
    public static string WriteParetoPlot(ReplayReport report, string directory)
    {
        ArgumentNullException.ThrowIfNull(report);
        var sweep = report.Sweep ?? throw new ArgumentException("the report holds no sweep", nameof(report));
        var plot = new Plot();
        double minX = double.PositiveInfinity, maxX = double.NegativeInfinity;
        foreach (var family in new[] { UpdateMode.Delta, UpdateMode.Live })
        {
            var points = sweep.Where(p => p.Point.Mode == family).OrderBy(p => p.Result.Cost.CpuSeconds).ToList();
            if (points.Count == 0) continue;
            // Log scale: the axis carries log10 of the cost; ticks are labelled in seconds below.
            var xs = points.Select(p => Math.Log10(Math.Max(1e-4, p.Result.Cost.CpuSeconds))).ToArray();
            var ys = points.Select(p => p.Result.Overall.Auc).ToArray();
            var s = plot.Add.Scatter(xs, ys);
            s.LegendText = family == UpdateMode.Delta ? "delta (sync interval)" : "live (adapter budget)";
            s.MarkerSize = 8;
            for (int i = 0; i < points.Count; i++)
            {
                // Neighbouring points of a family alternate above and below their marker so close ones stay readable.
                var text = plot.Add.Text(points[i].Point.Label.Split(' ', 2)[1], xs[i], ys[i]);
                text.LabelFontSize = 11;
                text.LabelFontColor = s.Color;
                text.OffsetY = i % 2 == 0 ? 6 : -20;
                text.OffsetX = 4;
            }
            minX = Math.Min(minX, xs.Min());
            maxX = Math.Max(maxX, xs.Max());
        }
        // Stale is named in the title rather than drawn: a line far below the points would squash their range.
        string stale = report.Mode(UpdateMode.Stale) is { } s0 ? $" (stale, no updates: {s0.Overall.Auc.ToString("F4", CultureInfo.InvariantCulture)})" : "";
        if (double.IsFinite(minX))
        {
            // Log scale: ticks at 1, 2, 5 × 10^k labelled in seconds, the other integers of each decade as minor ticks.
            double lo = minX - 0.15, hi = maxX + 0.15;
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            for (int decade = (int)Math.Floor(lo); decade <= (int)Math.Ceiling(hi); decade++)
                for (int m = 1; m <= 9; m++)
                {
                    double x = decade + Math.Log10(m);
                    if (x < lo || x > hi) continue;
                    if (m is 1 or 2 or 5) ticks.AddMajor(x, (m * Math.Pow(10, decade)).ToString("0.####", CultureInfo.InvariantCulture));
                    else ticks.AddMinor(x);
                }
            plot.Axes.Bottom.TickGenerator = ticks;
            plot.Axes.SetLimitsX(lo, hi);
        }
        plot.Title("Cost/accuracy frontier: overall AUC against update cost" + stale);
        plot.XLabel("update CPU-seconds (log scale)");
        plot.YLabel("overall AUC (progressive)");
        plot.ShowLegend(Edge.Right);
        string path = Path.Combine(directory, "pareto.png");
        plot.SavePng(path, 1100, 550);
        return path;
    }
}
