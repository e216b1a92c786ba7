using System.Globalization;
using LiveDlrm.Data;

namespace LiveDlrm.Cli.Commands;

public sealed class SynthCommand : ICommand
{
    public string Name => "synth";
    public string Summary => "write the synthetic drifting stream as TSV + schema + its known optimum AUC";
    public string Usage =>
        "  --out PATH              TSV to write (required); PATH.schema.json and PATH.optimum.json go beside it\n" +
        "  --events N              events (default 1000000)\n" +
        "  --seed S                seed (default 1); the same seed gives the same stream\n" +
        "  --drift X               drift strength, 0 = stationary (default 1)\n" +
        "  --events-per-second R   event-time rate (default 20)\n" +
        SyntheticWorldArgs.Usage(new SyntheticStreamConfig());

    public int Run(CommandArgs args)
    {
        string output = args.Require("out");
        long events = args.Long("events", DataSourceOptions.DefaultSyntheticEvents, min: 1, max: int.MaxValue);
        string seedText = args.String("seed", "1");
        if (!ulong.TryParse(seedText, NumberStyles.Integer, CultureInfo.InvariantCulture, out ulong seed))
            throw new UsageException($"--seed: '{seedText}' is not a non-negative integer");
        var defaults = new SyntheticStreamConfig();
        var config = defaults with
        {
            Seed = seed,
            Drift = args.Double("drift", defaults.Drift, min: 0, max: 100),
            EventsPerSecond = args.Double("events-per-second", defaults.EventsPerSecond, min: 1e-6, max: 1e9),
        };
        config = SyntheticWorldArgs.Apply(args, config);
        args.EnsureAllUsed();

        var s = SyntheticStreamFiles.Write(output, config, events);
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"wrote {s.TsvPath} ({s.Events:N0} events, {s.TsvBytes / 1e6:F1} MB) in {s.Seconds:F1} s ({s.Events / s.Seconds / 1e6:F2} M events/s)");
        Console.WriteLine($"      {s.SchemaPath}");
        Console.WriteLine($"      {s.OptimumPath}");
        Console.WriteLine($"event time   {DateTimeOffset.FromUnixTimeSeconds(s.FirstTimestamp):u} .. {DateTimeOffset.FromUnixTimeSeconds(s.LastTimestamp):u} ({(s.LastTimestamp - s.FirstTimestamp) / 3600.0:F1} h)");
        Console.WriteLine($"click rate   {s.ClickRate.ToString("F4", inv)} (mean true probability {s.MeanTrueProbability.ToString("F4", inv)})");
        Console.WriteLine($"new items    {s.NewItemsBorn} born; {s.NewItemEvents:N0} events ({100.0 * s.NewItemEvents / s.Events:F1} %) on them");
        Console.WriteLine($"optimum AUC  {s.OptimumAuc.ToString("F4", inv)} (AUC of the true probabilities; expected over label draws {s.ExpectedOptimumAuc.ToString("F4", inv)})");
        return 0;
    }
}
