using System.CommandLine;
using LiveDlrm.Cli.Commands;
using LiveDlrm.CommandLine;

namespace LiveDlrm.Cli;

/// <summary>The <c>livedlrm</c> command line: the root command with every verb and the global options.</summary>
internal static class CliApp
{
    /// <summary>Every verb, in help order.</summary>
    public static IReadOnlyList<CliCommand> CreateCommands() =>
    [
        new DemoCommand(), new EvalCommand(), new ExportPyTorchCommand(), new FleetCommand(), new ImportPyTorchCommand(), new InfoCommand(), new LatencyCommand(),
        new LoadgenCommand(), new PimPlanCommand(), new PimServeCommand(), new ReplayCommand(), new ServeCommand(), new SynthCommand(),
        new TopologyCommand(), new TrainCommand(),
    ];

    public static RootCommand CreateRoot()
    {
        var root = new RootCommand("livedlrm — DLRM inference that stays fresh (in-process LoRA adapters on the embedding tables)").WithGlobalOptions();
        foreach (var c in CreateCommands()) root.Subcommands.Add(c);
        return root;
    }

    public static int Run(string[] args) => CommandLineHost.Run(CreateRoot(), "livedlrm", args);
}
