using System.CommandLine;
using LiveDlrm.CommandLine;
using LiveDlrm.Data;

namespace LiveDlrm.Cli;

/// <summary>The shared <c>--data synthetic|PATH</c> options of every command that reads events; each command gives
/// its own default event count (and rate, for the replay).</summary>
internal sealed class DataSourceArgs
{
    public Option<string?> Data { get; } = Opt.Text("--data", "events: the embedded drifting stream, the id-only 20-year visit world, or a TSV file", DataSourceOptions.Synthetic, "synthetic|visits|PATH");
    public Option<string?> Schema { get; } = Opt.Text("--schema", "schema JSON of the file (default: FILE.schema.json beside it, else Criteo)", helpName: "PATH");
    public Option<long> Events { get; }
    public Option<ulong> Seed { get; } = Opt.ULong("--seed", "synthetic seed; the same seed gives the same stream", 1);
    public Option<double> Drift { get; } = Opt.Double("--drift", "synthetic drift strength, 0 = stationary", 1.0, 0, 100);
    public Option<double> EventsPerSecond { get; }
    public Option<string> BadLines { get; } = Opt.Choice("--bad-lines", "file: skip bad lines with a count and line numbers, or stop at the first", "skip", "skip", "fail");
    public Option<string> Cache { get; } = Opt.Choice("--cache", "file: binary columnar cache beside it (FILE.ldcache); auto = use it if valid", "off", "off", "auto", "rebuild");

    readonly long _defaultEvents;

    public DataSourceArgs(long defaultEvents, string eventsNote = "", double defaultEventsPerSecond = 20)
    {
        _defaultEvents = defaultEvents;
        Events = Opt.Long("--events", "synthetic: events to generate; file: read at most N" + eventsNote, defaultEvents, 1);
        EventsPerSecond = Opt.Double("--events-per-second", "synthetic event-time rate", defaultEventsPerSecond, 1e-6, 1e9);
    }

    public IEnumerable<Option> All => [Data, Schema, Events, Seed, Drift, EventsPerSecond, BadLines, Cache];

    public void AddTo(Command command) { foreach (var o in All) command.Options.Add(o); }

    /// <summary>The source the options describe; files are checked to exist. EventsPerSecond is null unless given.</summary>
    public DataSourceOptions Get(ParseResult r)
    {
        string data = r.GetValue(Data)!;
        string? schema = r.GetValue(Schema);
        if (data == DataSourceOptions.Synthetic && schema is not null)
            throw new UsageException("--schema applies to a data file, not to --data synthetic");
        if (data != DataSourceOptions.Synthetic && data != DataSourceOptions.Visits && !File.Exists(data))
            throw new UsageException(Directory.Exists(data) ? $"--data: '{data}' is a directory, not a data file" : $"--data: file '{data}' does not exist (or use --data synthetic)");
        if (schema is not null && !File.Exists(schema)) throw new UsageException($"--schema: file '{schema}' does not exist");
        return new DataSourceOptions
        {
            Data = data,
            SchemaPath = schema,
            Events = r.GetValue(Events) is var n && n > 0 ? n : _defaultEvents,
            Seed = r.GetValue(Seed),
            Drift = r.GetValue(Drift),
            EventsPerSecond = r.GetResult(EventsPerSecond) is { Implicit: false } ? r.GetValue(EventsPerSecond) : null,
            OnBadLine = r.GetValue(BadLines) == "fail" ? BadLinePolicy.Fail : BadLinePolicy.Skip,
            Cache = r.GetValue(Cache) switch { "auto" => CacheMode.Auto, "rebuild" => CacheMode.Rebuild, _ => CacheMode.Off },
        };
    }
}
