using System.CommandLine;
using System.Net;
using LiveDlrm.CommandLine;
using LiveDlrm.Data;
using LiveDlrm.Harness;

namespace LiveDlrm.Cli.Commands;

internal sealed class LoadgenCommand : CliCommand
{
    static readonly LoadOptions D = new() { Target = new IPEndPoint(IPAddress.Loopback, 7070) };

    readonly Option<string?> _target = Opt.Text("--target", "the node's HTTP endpoint, loopback only", "127.0.0.1:7070", helpName: "ADDR:PORT");
    readonly Option<string?> _grpcTarget = Opt.Text("--grpc-target", "the node's gRPC endpoint (default: the HTTP port + 1)", helpName: "ADDR:PORT");
    readonly Option<double?> _qps = Opt.OptionalDouble("--qps", "Poisson arrival rate (required)", 0.001, 1_000_000);
    readonly Option<double?> _seconds = Opt.OptionalDouble("--seconds", "measured duration (required)", 0.1, 3600);
    readonly Option<double> _warmup = Opt.Double("--warmup", "unrecorded lead-in seconds", D.Warmup.TotalSeconds, 0, 600);
    readonly Option<int> _batch = Opt.Int("--batch", "events per request", D.EventsPerRequest, 1, 100_000);
    readonly Option<double> _feedbackRate = Opt.Double("--feedback-rate", "fraction of events whose label is sent back", D.FeedbackRate, 0, 1);
    readonly Option<double> _positiveRate = Opt.Double("--positive-rate", "fraction of the sent labels that are 1", D.PositiveRate, 0, 1);
    readonly Option<double> _feedbackDelay = Opt.Double("--feedback-delay", "label delay in seconds", D.FeedbackDelay.TotalSeconds, 0, 3600);
    readonly Option<int> _maxInFlight = Opt.Int("--max-in-flight", "outstanding requests at most; more arrivals count as dropped", D.MaxInFlight, 1, 1 << 20);
    readonly Option<int> _seed = Opt.Int("--seed", "seed of arrivals and events", D.Seed);
    readonly Option<string?> _json = Opt.Text("--json", "also write the result as JSON", helpName: "PATH");
    readonly Option<string?> _data = Opt.Text("--data", "replay the events of a TSV file (each sent-back label is the event's own) instead of synthetic ones", helpName: "PATH");
    readonly Option<string?> _schema = Opt.Text("--schema", "schema JSON of the --data file (default: FILE.schema.json beside it, else Criteo)", helpName: "PATH");

    public LoadgenCommand() : base("loadgen", "open-loop Poisson load against a live node on this machine: latency from intended send times, labels sent back")
    {
        foreach (var o in new Option[] { _target, _grpcTarget, _qps, _seconds, _warmup, _batch, _feedbackRate, _positiveRate, _feedbackDelay, _maxInFlight, _seed, _json, _data, _schema })
            Add(o);
    }

    /// <summary>The --data file as an event source (checked to exist; opened by the generator), or null.</summary>
    Func<IEventSource>? DataSource(ParseResult result)
    {
        string? schema = result.GetValue(_schema);
        if (result.GetValue(_data) is not string data)
            return schema is null ? null : throw new UsageException("--schema applies to a --data file");
        if (!File.Exists(data)) throw new UsageException($"--data: file '{data}' does not exist");
        if (schema is not null && !File.Exists(schema)) throw new UsageException($"--schema: file '{schema}' does not exist");
        var options = new DataSourceOptions { Data = data, SchemaPath = schema };
        return () => options.Open(CliLogging.For("loadgen"));
    }

    protected override int Run(ParseResult result)
    {
        static IPEndPoint EndPoint(string option, string text) =>
            IPEndPoint.TryParse(text, out var e) && e.Port != 0 ? e : throw new UsageException($"{option}: '{text}' is not ADDRESS:PORT");
        var options = new LoadOptions
        {
            Target = EndPoint("--target", result.GetValue(_target)!),
            GrpcTarget = result.GetValue(_grpcTarget) is string g ? EndPoint("--grpc-target", g) : null,
            Qps = result.GetValue(_qps) ?? throw new UsageException("--qps is required"),
            Duration = TimeSpan.FromSeconds(result.GetValue(_seconds) ?? throw new UsageException("--seconds is required")),
            Warmup = TimeSpan.FromSeconds(result.GetValue(_warmup)),
            EventsPerRequest = result.GetValue(_batch),
            FeedbackRate = result.GetValue(_feedbackRate),
            PositiveRate = result.GetValue(_positiveRate),
            FeedbackDelay = TimeSpan.FromSeconds(result.GetValue(_feedbackDelay)),
            MaxInFlight = result.GetValue(_maxInFlight),
            Seed = result.GetValue(_seed),
            Source = DataSource(result),
        };
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        var r = LoadGenerator.RunAsync(options).GetAwaiter().GetResult();
        Console.WriteLine(r.Summary());
        if (result.GetValue(_json) is string json)
        {
            File.WriteAllText(json + ".tmp", LoadGenerator.ToJson(r));
            File.Move(json + ".tmp", json, overwrite: true);
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }
        return r.Errors > 0 ? ExitCodes.Failure : ExitCodes.Ok;
    }
}
