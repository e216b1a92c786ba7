using System.Net;
using LiveDlrm.Harness;

namespace LiveDlrm.Cli.Commands;

public sealed class LoadgenCommand : ICommand
{
    public string Name => "loadgen";
    public string Summary => "open-loop Poisson load against a live node on this machine: latency from intended send times, labels sent back";
    public string Usage => """
          --target ADDR:PORT      the node's HTTP endpoint (loopback only; default 127.0.0.1:7070)
          --grpc-target ADDR:PORT the node's gRPC endpoint (default: HTTP port + 1)
          --qps N                 arrival rate (required)
          --seconds S             measured duration (required, at most 3600)
          --warmup S              unrecorded lead-in (default 1)
          --batch N               events per request (default 16)
          --feedback-rate P       fraction of events whose label is sent back (default 0.1)
          --positive-rate P       fraction of sent labels that are 1 (default 0.5)
          --feedback-delay S      label delay in seconds (default 1)
          --max-in-flight N       outstanding requests at most; more arrivals count as dropped (default 2048)
          --seed N                (default 1)
          --json PATH             also write the result as JSON
        """;

    public int Run(CommandArgs args)
    {
        LoadOptions options;
        try
        {
            options = new LoadOptions
            {
                Target = IPEndPoint.Parse(args.String("target", "127.0.0.1:7070")),
                GrpcTarget = args.String("grpc-target") is string g ? IPEndPoint.Parse(g) : null,
                Qps = args.Double("qps", double.NaN),
                Duration = TimeSpan.FromSeconds(args.Double("seconds", double.NaN)),
                Warmup = TimeSpan.FromSeconds(args.Double("warmup", 1, 0, 600)),
                EventsPerRequest = args.Int("batch", 16, 1, 100_000),
                FeedbackRate = args.Double("feedback-rate", 0.1, 0, 1),
                PositiveRate = args.Double("positive-rate", 0.5, 0, 1),
                FeedbackDelay = TimeSpan.FromSeconds(args.Double("feedback-delay", 1, 0, 3600)),
                MaxInFlight = args.Int("max-in-flight", 2048, 1, 1 << 20),
                Seed = args.Int("seed", 1),
            };
            if (!args.Has("qps")) throw new UsageException("missing required option --qps");
            if (!args.Has("seconds")) throw new UsageException("missing required option --seconds");
            options.Validate();
        }
        catch (FormatException e) { throw new UsageException($"--target/--grpc-target: {e.Message}"); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        string? json = args.String("json");
        args.EnsureAllUsed();
        LoadResult result;
        try { result = LoadGenerator.RunAsync(options).GetAwaiter().GetResult(); }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"livedlrm loadgen: {options.Target}: {e.Message}");
            return 1;
        }
        Console.WriteLine(result.Summary());
        if (json is not null)
        {
            File.WriteAllText(json, LoadGenerator.ToJson(result));
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }
        return result.Errors > 0 ? 1 : 0;
    }
}
