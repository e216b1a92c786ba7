using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Globalization;
using LiveDlrm.Data;
using LiveDlrm.Files;

namespace LiveDlrm.Cli.Commands;

internal sealed class SynthCommand : CliCommand
{
    static readonly SyntheticStreamConfig Defaults = new();
    readonly Option<string?> _out = Opt.Text("--out", "TSV to write; PATH.schema.json and PATH.optimum.json go beside it", helpName: "PATH", required: true);
    readonly Option<long> _events = Opt.Long("--events", "events", DataSourceOptions.DefaultSyntheticEvents, 1, int.MaxValue);
    readonly Option<ulong> _seed = Opt.ULong("--seed", "seed; the same seed gives the same stream", Defaults.Seed);
    readonly Option<double> _drift = Opt.Double("--drift", "drift strength, 0 = stationary", Defaults.Drift, 0, 100);
    readonly Option<double> _eventsPerSecond = Opt.Double("--events-per-second", "event-time rate", Defaults.EventsPerSecond, 1e-6, 1e9);
    readonly SyntheticWorldArgs _world = new(Defaults);

    public SynthCommand() : base("synth", "write the synthetic drifting stream as TSV + schema + its known optimum AUC")
    {
        Add(_out); Add(_events); Add(_seed); Add(_drift); Add(_eventsPerSecond);
        _world.AddTo(this);
    }

    protected override int Run(ParseResult result)
    {
        string output = result.GetValue(_out)!;
        long events = result.GetValue(_events);
        var config = Defaults with
        {
            Seed = result.GetValue(_seed),
            Drift = result.GetValue(_drift),
            EventsPerSecond = result.GetValue(_eventsPerSecond),
        };
        config = _world.Apply(result, config);
        output = OutputTarget.CheckFile("--out", output);
        OutputTarget.CheckFile("--out", SyntheticStreamFiles.SchemaPathFor(output));
        OutputTarget.CheckFile("--out", SyntheticStreamFiles.OptimumPathFor(output));
        try { config.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

        var s = Terminal.WithProgress(progress =>
        {
            var task = progress.Task("synth", events, "events");
            var summary = SyntheticStreamFiles.Write(output, config, events, progress: n => task.Report(n, $"synth {n,12:N0} of {events:N0} events"));
            task.Complete();
            return summary;
        });
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
