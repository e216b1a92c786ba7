using System.Globalization;
using LiveDlrm.Data;

namespace LiveDlrm.Cli;

/// <summary>The shared <c>--data synthetic|PATH</c> options of every command that reads events.</summary>
public static class DataSourceArgs
{
    public const string Usage =
        "  --data synthetic|PATH   events: the embedded drifting stream (default) or a TSV file\n" +
        "  --schema PATH           schema JSON of the file (default: FILE.schema.json beside it, else Criteo)\n" +
        "  --events N              synthetic: events to generate (default 1000000); file: read at most N\n" +
        "  --seed S                synthetic seed (default 1)\n" +
        "  --drift X               synthetic drift strength, 0 = stationary (default 1)\n" +
        "  --events-per-second R   synthetic event-time rate (default 20)\n" +
        "  --bad-lines skip|fail   file: skip bad lines with a count and line numbers (default), or stop at the first\n" +
        "  --cache off|auto|rebuild  file: binary columnar cache beside it (FILE.ldcache); auto = use if valid (default off)";

    public static DataSourceOptions Parse(CommandArgs args, long? defaultEvents = null)
    {
        string data = args.String("data", DataSourceOptions.Synthetic);
        long events = args.Long("events", -1, min: 1);
        string? schema = args.String("schema");
        if (data == DataSourceOptions.Synthetic && schema is not null)
            throw new UsageException("--schema applies to a data file, not to --data synthetic");
        if (data != DataSourceOptions.Synthetic && !File.Exists(data))
            throw new UsageException($"--data: file '{data}' does not exist (or use --data synthetic)");
        if (schema is not null && !File.Exists(schema)) throw new UsageException($"--schema: file '{schema}' does not exist");
        string seedText = args.String("seed", "1");
        if (!ulong.TryParse(seedText, NumberStyles.Integer, CultureInfo.InvariantCulture, out ulong seed))
            throw new UsageException($"--seed: '{seedText}' is not a non-negative integer");
        double drift = args.Double("drift", 1.0, min: 0, max: 100);
        double? eps = args.Has("events-per-second") ? args.Double("events-per-second", 20, min: 1e-6, max: 1e9) : null;
        var badLines = args.String("bad-lines", "skip") switch
        {
            "skip" => BadLinePolicy.Skip,
            "fail" => BadLinePolicy.Fail,
            var v => throw new UsageException($"--bad-lines: '{v}' is not skip or fail"),
        };
        var cache = args.String("cache", "off") switch
        {
            "off" => CacheMode.Off,
            "auto" => CacheMode.Auto,
            "rebuild" => CacheMode.Rebuild,
            var v => throw new UsageException($"--cache: '{v}' is not off, auto or rebuild"),
        };
        return new DataSourceOptions
        {
            Data = data,
            SchemaPath = schema,
            Events = events > 0 ? events : defaultEvents,
            Seed = seed,
            Drift = drift,
            EventsPerSecond = eps,
            OnBadLine = badLines,
            Cache = cache,
        };
    }
}
