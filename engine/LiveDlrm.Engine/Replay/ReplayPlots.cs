using ScottPlot;

namespace LiveDlrm.Replay;

/// <summary>PNG plots of a replay (ScottPlot): AUC per window per mode; live adapter rank per table and adapter
/// memory over time. Time axis = event time since the replay's start in the span's natural unit (hours, days,
/// months or years: <see cref="ReplayWindows.Unit"/>).</summary>
internal static class ReplayPlots
{
    /// <summary>Writes the plots into <paramref name="directory"/>; returns the files written.</summary>
    public static IReadOnlyList<string> Write(ReplayReport report, string directory)
    {
        ArgumentNullException.ThrowIfNull(report);
        var files = new List<string>();
        var (unit, unitSeconds) = ReplayWindows.Unit(report.ReplayEnd - report.ReplayStart);
        double Since(long t) => (t - report.ReplayStart) / unitSeconds;
        string axis = $"event time since replay start ({unit})";

        var auc = new Plot();
        foreach (var m in report.Modes)
        {
            var xs = m.Windows.Select(w => Since(w.End)).ToArray();
            var ys = m.Windows.Select(w => w.Metrics.Auc).ToArray();
            var s = auc.Add.Scatter(xs, ys);
            s.LegendText = m.Name;
        }
        if (report.Modes.Count > 0 && report.Modes[0].Windows.Any(w => double.IsFinite(w.OptimumAuc)))
        {
            var w0 = report.Modes[0].Windows;
            var s = auc.Add.Scatter(w0.Select(w => Since(w.End)).ToArray(), w0.Select(w => w.OptimumAuc).ToArray());
            s.LegendText = "optimum (true p)";
            s.LinePattern = LinePattern.Dashed;
        }
        auc.Title("AUC per window (progressive evaluation)");
        auc.XLabel(axis);
        auc.YLabel("AUC");
        auc.ShowLegend(ScottPlot.Edge.Right);
        files.Add(Save(auc, directory, "auc.png"));

        var live = report.Mode(UpdateMode.Live);
        if (live is not null && live.Windows.Count > 0)
        {
            var rank = new Plot();
            var tables = live.Windows.Where(w => w.Ranks is not null).SelectMany(w => w.Ranks!.Keys).Distinct().ToList();
            foreach (var table in tables)
            {
                var pts = live.Windows.Where(w => w.Ranks is not null && w.Ranks.ContainsKey(table)).ToList();
                var s = rank.Add.Scatter(pts.Select(w => Since(w.End)).ToArray(), pts.Select(w => (double)w.Ranks![table]).ToArray());
                s.LegendText = "rank " + table;
            }
            var mem = rank.Add.Scatter(live.Windows.Select(w => Since(w.End)).ToArray(), live.Windows.Select(w => (w.AdapterMemoryPct ?? 0) * 10).ToArray());
            mem.LegendText = "adapter memory (‰ of table bytes)";
            mem.LinePattern = LinePattern.Dashed;
            rank.Title("Live adapters: rank per table and memory");
            rank.XLabel(axis);
            rank.YLabel("rank  /  memory ‰");
            rank.ShowLegend(ScottPlot.Edge.Right); // outside the data: the rank lines fill the whole area
            files.Add(Save(rank, directory, "live-rank-memory.png"));
        }
        return files;
    }

    static string Save(Plot plot, string directory, string name)
    {
        string path = Path.Combine(directory, name);
        plot.SavePng(path, 1100, 500); // wide enough for the legend beside the plot
        return path;
    }
}
