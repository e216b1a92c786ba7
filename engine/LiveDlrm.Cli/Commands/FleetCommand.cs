using System.CommandLine;
using System.Runtime.InteropServices;
using LiveDlrm.CommandLine;
using LiveDlrm.Serving;
using LiveDlrm.Serving.Fleet;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm fleet</c>: replicas that train on one shared training-example log (NATS JetStream); see
/// docs/fleet.md.</summary>
internal sealed class FleetCommand : CliCommand
{
    public FleetCommand() : base("fleet", "replicas that train on one shared training-example log (NATS JetStream): run a replica, show the fleet")
    {
        Subcommands.Add(new FleetReplicaCommand());
        Subcommands.Add(new FleetStatusCommand());
    }

    protected override int Run(ParseResult result) => throw new UsageException("choose a subcommand: replica or status (livedlrm fleet --help)");

    internal static Option<string?> Url() => Opt.Text("--log", "the NATS server holding the log", "nats://127.0.0.1:4222", helpName: "URL");
    internal static Option<string?> Stream() => Opt.Text("--stream", "the JetStream stream of the fleet", "LIVEDLRM_EXAMPLES", helpName: "NAME");
}

/// <summary><c>livedlrm fleet replica</c>: a stand-alone replica that trains on the whole log (no serving).</summary>
internal sealed class FleetReplicaCommand : CliCommand, IHandlesOwnInterrupts
{
    readonly Option<string?> _url = FleetCommand.Url();
    readonly Option<string?> _stream = FleetCommand.Stream();
    readonly Option<string?> _subject = Opt.Text("--subject", "the subject examples are published on", "livedlrm.examples.default", helpName: "SUBJECT");
    readonly Option<string?> _model = Opt.Text("--model", "base model checkpoint directory (used when there is no replica checkpoint yet)", helpName: "DIR", required: true);
    readonly Option<string?> _replica = Opt.Text("--replica-id", "this replica's name (letters, digits, '-', '_')", helpName: "NAME", required: true);
    readonly Option<string?> _checkpoints = Opt.Text("--checkpoint-dir", "where the replica's checkpoint (adapters + applied sequence) is read at start and written", helpName: "DIR");
    readonly Option<int> _batch = Opt.Int("--batch", "examples per training step (the same on every replica of a fleet)", 64, 1, 1 << 16);
    readonly Option<double> _interval = Opt.Double("--checkpoint-seconds", "checkpoint and status interval", 10, 0.05, 86_400);

    public FleetReplicaCommand() : base("replica", "a replica that replays and follows the fleet log: deterministic training, checkpoints, status; stops on SIGTERM/SIGINT")
    {
        foreach (var o in new Option[] { _url, _stream, _subject, _model, _replica, _checkpoints, _batch, _interval }) Add(o);
    }

    protected override int Run(ParseResult result)
    {
        var options = new FleetReplicaHostOptions
        {
            Url = result.GetValue(_url)!, Stream = result.GetValue(_stream)!, Subject = result.GetValue(_subject)!,
            Model = result.GetValue(_model)!, ReplicaId = result.GetValue(_replica)!, CheckpointDir = result.GetValue(_checkpoints),
            BatchSize = result.GetValue(_batch), CheckpointInterval = TimeSpan.FromSeconds(result.GetValue(_interval)),
        };
        using var cts = new CancellationTokenSource();
        void Stop(PosixSignalContext ctx) { ctx.Cancel = true; cts.Cancel(); }
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        var log = (string line) => { lock (Console.Out) { Console.Out.WriteLine(line); Console.Out.Flush(); } };
        FleetReplicaHost.RunAsync(options, log, cts.Token).GetAwaiter().GetResult();
        return ExitCodes.Ok;
    }
}

/// <summary><c>livedlrm fleet status</c>: each replica's applied sequence, lag and adapter fingerprint, and whether
/// they agree (exit 1 when replicas at the same position disagree).</summary>
internal sealed class FleetStatusCommand : CliCommand
{
    readonly Option<string?> _url = FleetCommand.Url();
    readonly Option<string?> _stream = FleetCommand.Stream();

    public FleetStatusCommand() : base("status", "each replica's applied sequence, lag (messages, seconds), adapter fingerprint, and whether they agree")
    {
        Add(_url);
        Add(_stream);
    }

    protected override int Run(ParseResult result)
    {
        var (text, disagree) = FleetReplicaHost.StatusAsync(result.GetValue(_url)!, result.GetValue(_stream)!, CancellationToken.None).GetAwaiter().GetResult();
        Console.Out.Write(text);
        return disagree ? ExitCodes.Failure : ExitCodes.Ok;
    }
}
