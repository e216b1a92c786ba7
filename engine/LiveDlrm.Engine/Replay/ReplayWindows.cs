using System.Globalization;

namespace LiveDlrm.Replay;

/// <summary>Windows that fit the replayed span: the automatic window length, the rule that merges windows too thin
/// for an AUC, the span's natural time unit (plots, console) and the console table of windows.</summary>
internal static class ReplayWindows
{
    /// <summary>A window holds at least this many events with both labels present, else it is merged into the next.</summary>
    public const int DefaultMinEvents = 200;
    /// <summary>Timestamps spanning more than this are taken for a unit mistake (ms or µs read as seconds).</summary>
    public const double MaxPlausibleYears = 100;
    /// <summary>Console rows beyond which consecutive windows are summarised together.</summary>
    public const int MaxConsoleRows = 50;

    const long Minute = 60, Hour = 3600, Day = 86_400, Year = 31_556_952;
    static readonly long[] Lengths =
    [
        1, 5, 10, 30, Minute, 5 * Minute, 10 * Minute, 15 * Minute, 30 * Minute, Hour, 2 * Hour, 3 * Hour, 6 * Hour, 12 * Hour,
        Day, 2 * Day, 7 * Day, 14 * Day, 30 * Day, 60 * Day, 91 * Day, 182 * Day, Year,
    ];

    /// <summary>The shortest round length (1 s … 1 year, then whole years) that cuts <paramref name="spanSeconds"/>
    /// into at most 48 windows; neighbouring lengths differ by at most 2.5×, so there are about 20–48.</summary>
    public static long AutoWindowSeconds(long spanSeconds)
    {
        long needed = Math.Max(1, (spanSeconds + 47) / 48);
        foreach (long length in Lengths)
            if (length >= needed) return length;
        return (needed + Year - 1) / Year * Year;
    }

    /// <summary>The error for a span no real stream has, naming the likely cause.</summary>
    public static string? ImplausibleSpan(long first, long last, string timestampUnit)
    {
        double years = (double)(last - first) / Year;
        if (years <= MaxPlausibleYears) return null;
        return $"the events span {years:N0} years of {timestampUnit switch { "ms" => "millisecond", "us" => "microsecond", _ => "second" }} timestamps; " +
               "if the timestamp column holds milliseconds or microseconds, declare \"timestampUnit\": \"ms\" or \"us\" in the schema";
    }

    /// <summary>The natural unit of an axis over <paramref name="spanSeconds"/>: hours up to 3 days, days up to
    /// 180 days, months up to 5 years, years beyond.</summary>
    public static (string Name, double Seconds) Unit(long spanSeconds) =>
        spanSeconds <= 3 * Day ? ("h", Hour)
        : spanSeconds <= 180 * Day ? ("days", Day)
        : spanSeconds <= 5 * Year ? ("months", Year / 12.0)
        : ("years", Year);

    /// <summary>The window table for the console: one row per window (start in the span's unit, AUC per mode, the
    /// optimum), or, past <paramref name="maxRows"/> windows, one row per group of consecutive windows with
    /// event-weighted mean AUCs.</summary>
    public static IReadOnlyList<string> ConsoleTable(ReplayReport report, int maxRows = MaxConsoleRows)
    {
        ArgumentNullException.ThrowIfNull(report);
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string>();
        int count = report.Modes.Count == 0 ? 0 : report.Modes.Min(m => m.Windows.Count);
        if (count == 0) return lines;
        var (unit, seconds) = Unit(report.ReplayEnd - report.ReplayStart);
        int group = (count + maxRows - 1) / maxRows;
        if (group > 1) lines.Add($"{count} windows of {Describe(report.WindowSeconds)}: each row is the event-weighted mean of {group} consecutive windows");
        string header = $"{"start (" + unit + ")",12}";
        foreach (var m in report.Modes) header += $" {m.Name,8}";
        lines.Add(header + $" {"optimum",8} {"events",8}");
        for (int i = 0; i < count; i += group)
        {
            int end = Math.Min(count, i + group);
            var w0 = report.Modes[0].Windows;
            long events = 0;
            for (int k = i; k < end; k++) events += w0[k].Metrics.Events;
            double Mean(Func<WindowResult, double> value, IReadOnlyList<WindowResult> ws)
            {
                double sum = 0;
                for (int k = i; k < end; k++) sum += value(ws[k]) * ws[k].Metrics.Events;
                return sum / Math.Max(1, events);
            }
            string line = $"{((w0[i].Start - report.ReplayStart) / seconds).ToString("F1", inv),12}";
            foreach (var m in report.Modes) line += $" {Mean(w => w.Metrics.Auc, m.Windows).ToString("F4", inv),8}";
            string optimum = double.IsFinite(w0[i].OptimumAuc) ? Mean(w => w.OptimumAuc, w0).ToString("F4", inv) : "-";
            lines.Add(line + $" {optimum,8} {events,8}");
        }
        return lines;
    }

    /// <summary>A window length in words ("10 min", "7 days").</summary>
    public static string Describe(long seconds) =>
        seconds % Year == 0 ? $"{seconds / Year} year{(seconds / Year > 1 ? "s" : "")}"
        : seconds % Day == 0 ? $"{seconds / Day} day{(seconds / Day > 1 ? "s" : "")}"
        : seconds % Hour == 0 ? $"{seconds / Hour} h"
        : seconds % Minute == 0 ? $"{seconds / Minute} min"
        : $"{seconds} s";
}
