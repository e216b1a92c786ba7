using Spectre.Console;
using Spectre.Console.Rendering;

namespace LiveDlrm.CommandLine;

/// <summary>
/// How the CLI talks to a person: coloured one-line errors and live progress bars when stderr is a terminal;
/// plain text otherwise (pipes, CI logs), with <c>--no-color</c> or with <c>NO_COLOR</c> set. Results go to stdout:
/// tables with borders when stdout is a terminal, plain padded lines otherwise, so they stay parseable.
/// </summary>
internal static class Terminal
{
    static bool _noColor;

    /// <summary>True when stderr is a terminal and colour is allowed: progress is drawn live, errors in red.</summary>
    public static bool Rich => !_noColor && !Console.IsErrorRedirected
                               && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"))
                               && Environment.GetEnvironmentVariable("TERM") is not "dumb";

    public static void Configure(bool noColor) => _noColor = noColor;

    static IAnsiConsole ErrorConsole() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
        Ansi = Rich ? AnsiSupport.Detect : AnsiSupport.No,
        ColorSystem = Rich ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        Interactive = Rich ? InteractionSupport.Detect : InteractionSupport.No,
    });

    /// <summary>True when stdout is a terminal and colour is allowed: result tables are drawn with borders.</summary>
    public static bool RichOut => !_noColor && !Console.IsOutputRedirected
                                  && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"))
                                  && Environment.GetEnvironmentVariable("TERM") is not "dumb";

    /// <summary>A result column: its header and its plain-text width (negative = left-aligned, as in a format string).</summary>
    public readonly record struct Column(string Header, int Width);

    /// <summary>Writes a result table to stdout: a Spectre.Console table on a terminal; otherwise one line per row,
    /// cells padded to the columns' widths and separated by one space, so scripts can split it.</summary>
    public static void WriteTable(IReadOnlyList<Column> columns, IEnumerable<IReadOnlyList<string>> rows)
    {
        if (!RichOut)
        {
            Console.WriteLine(PlainRow(columns, columns.Select(c => c.Header).ToList()));
            foreach (var row in rows) Console.WriteLine(PlainRow(columns, row));
            return;
        }
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var c in columns)
        {
            var column = new TableColumn(Markup.Escape(c.Header));
            table.AddColumn(c.Width < 0 ? column.LeftAligned() : column.RightAligned());
        }
        foreach (var row in rows) table.AddRow(row.Select(cell => Markup.Escape(cell)).ToArray());
        AnsiConsole.Write(table);
    }

    static string PlainRow(IReadOnlyList<Column> columns, IReadOnlyList<string> cells) =>
        string.Join(' ', cells.Select((cell, i) => columns[i].Width < 0 ? cell.PadRight(-columns[i].Width) : cell.PadLeft(columns[i].Width)));

    /// <summary>The console of the live progress display while one is drawn (log lines must go through it).</summary>
    static volatile IAnsiConsole? s_live;

    /// <summary>A log line on stderr: through the live progress display when one is drawn, coloured by level on a
    /// terminal, else plain (warnings and errors prefixed with their level).</summary>
    public static void LogLine(Microsoft.Extensions.Logging.LogLevel level, string message)
    {
        string? tag = level switch
        {
            Microsoft.Extensions.Logging.LogLevel.Warning => "warning",
            Microsoft.Extensions.Logging.LogLevel.Error or Microsoft.Extensions.Logging.LogLevel.Critical => "error",
            _ => null,
        };
        if (s_live is { } live) { live.MarkupLine(Styled(level, tag, message)); return; }
        if (!Rich) { Console.Error.WriteLine(tag is null ? "  " + message : $"  {tag}: {message}"); return; }
        ErrorConsole().MarkupLine(Styled(level, tag, message));
    }

    static string Styled(Microsoft.Extensions.Logging.LogLevel level, string? tag, string message)
    {
        string text = Markup.Escape(tag is null ? "  " + message : $"  {tag}: {message}");
        return level switch
        {
            Microsoft.Extensions.Logging.LogLevel.Warning => $"[yellow]{text}[/]",
            >= Microsoft.Extensions.Logging.LogLevel.Error => $"[red]{text}[/]",
            <= Microsoft.Extensions.Logging.LogLevel.Debug => $"[grey]{text}[/]",
            _ => text,
        };
    }

    /// <summary>The one line a failed run ends with: <c>livedlrm CMD: message</c>.</summary>
    public static void Error(string who, string message)
    {
        if (!Rich) { Console.Error.WriteLine($"{who}: {message}"); return; }
        ErrorConsole().MarkupLine($"[red]{Markup.Escape(who)}:[/] {Markup.Escape(message)}");
    }

    /// <summary>Runs <paramref name="work"/> with a progress display: live bars (rate, ETA) on a terminal, else
    /// the plain lines each task's <c>plainEvery</c> asks for.</summary>
    public static T WithProgress<T>(Func<IProgressReporter, T> work)
    {
        if (!Rich) return work(new PlainReporter());
        T result = default!;
        var console = ErrorConsole();
        var units = new System.Collections.Concurrent.ConcurrentDictionary<int, string>();
        console.Progress()
            .AutoClear(true)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RateColumn(units),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                s_live = console;
                try { result = work(new LiveReporter(ctx, units)); }
                finally { s_live = null; }
            });
        return result;
    }

    /// <summary>Progress of named tasks; log lines (<see cref="CliLogging"/>) go through the live display while it is drawn.</summary>
    public interface IProgressReporter
    {
        /// <summary>A task of <paramref name="total"/> units (null = unknown length).</summary>
        IProgressTask Task(string name, double? total, string unit);
    }

    public interface IProgressTask
    {
        /// <summary>Sets the units done; <paramref name="plainLine"/> is printed in plain mode when the task crosses a
        /// quarter (or every call when the length is unknown).</summary>
        void Report(double done, string? plainLine = null);
        void Complete();
    }

    sealed class PlainReporter : IProgressReporter
    {
        public IProgressTask Task(string name, double? total, string unit) => new PlainTask(total);

        sealed class PlainTask(double? total) : IProgressTask
        {
            int _lastQuarter = -1;

            public void Report(double done, string? plainLine)
            {
                if (plainLine is null) return;
                if (total is double t && t > 0)
                {
                    int quarter = (int)Math.Floor(Math.Clamp(done / t, 0, 1) * 4);
                    if (quarter == _lastQuarter) return;
                    _lastQuarter = quarter;
                }
                Console.Error.WriteLine(plainLine);
            }

            public void Complete() { }
        }
    }

    sealed class LiveReporter(ProgressContext ctx, System.Collections.Concurrent.ConcurrentDictionary<int, string> units) : IProgressReporter
    {
        public IProgressTask Task(string name, double? total, string unit)
        {
            var task = ctx.AddTask(Markup.Escape(name), maxValue: total ?? 1);
            task.IsIndeterminate = total is null;
            units[task.Id] = unit;
            return new LiveTask(task);
        }

        sealed class LiveTask(ProgressTask task) : IProgressTask
        {
            public void Report(double done, string? plainLine)
            {
                if (task.IsIndeterminate) task.MaxValue = Math.Max(task.MaxValue, done + 1);
                task.Value = done;
            }

            public void Complete()
            {
                task.IsIndeterminate = false;
                task.MaxValue = Math.Max(task.Value, 1);
                task.Value = task.MaxValue;
                task.StopTask();
            }
        }
    }

    /// <summary>Units per second of a task, with the task's unit name (events/s).</summary>
    sealed class RateColumn(System.Collections.Concurrent.ConcurrentDictionary<int, string> units) : ProgressColumn
    {
        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            double? speed = task.Speed;
            string unit = units.GetValueOrDefault(task.Id, "");
            return new Text(speed is double s && unit.Length > 0 ? $"{s:N0} {unit}/s" : "", new Style(Color.Grey));
        }
    }
}
