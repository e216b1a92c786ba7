using System.CommandLine;
using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using LiveDlrm.CommandLine;

namespace LiveDlrm.Perf;

/// <summary>A comparative run: several implementations timed in one process on the same inputs, medians
/// reported, results written to artifacts/bench/NAME.json. Its options are fields defined once (see <see cref="Opt"/>).</summary>
internal abstract class BenchRun(string name, string description) : CliCommand(name, description)
{
    /// <summary>The option's value, or <paramref name="quickValue"/> when --quick is on and the option was not given
    /// (the help text of such options names both defaults).</summary>
    protected static T Pick<T>(ParseResult result, Option<T> option, bool quick, T quickValue) =>
        quick && !Given(result, option) ? quickValue : result.GetValue(option)!;

    /// <summary>A comma-separated list option; each element parsed by <paramref name="parse"/> (null = invalid).</summary>
    protected static T[] List<T>(string option, string value, Func<string, T?> parse, string what) where T : struct
    {
        var parts = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new UsageException($"{option} needs a comma-separated list, got '{value}'");
        return parts.Select(p => parse(p) ?? throw new UsageException($"{option}: '{p}' is not {what}")).Distinct().ToArray();
    }

    /// <summary>The repository root (the folder holding LiveDlrm.slnx) above the working directory or the binary,
    /// else the working directory: bench reports go to its artifacts/bench/.</summary>
    internal static string RepoRoot()
    {
        foreach (string start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "LiveDlrm.slnx"))) return dir.FullName;
        return Environment.CurrentDirectory;
    }

    protected static long? PositiveLong(string s) =>
        long.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v > 0 ? v : null;

    protected static int? NonNegativeInt(string s) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0 ? v : null;
}

internal static class Program
{
    public static IReadOnlyList<BenchRun> CreateRuns() => typeof(Program).Assembly.GetTypes()
        .Where(t => typeof(BenchRun).IsAssignableFrom(t) && t is { IsAbstract: false })
        .Select(t => (BenchRun)Activator.CreateInstance(t)!)
        .OrderBy(r => r.Name, StringComparer.Ordinal).ToList();

    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "bdn")
        {
            // BenchmarkDotNet classes: ./build.sh bench bdn --filter '*EmbeddingBag*'; reports land next to lookup.json.
            var config = DefaultConfig.Instance.WithArtifactsPath(Path.Combine(BenchRun.RepoRoot(), "artifacts", "bench", "bdn"));
            BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args[1..], config);
            return 0;
        }
        var root = new RootCommand("comparative benchmark runs: ./build.sh bench NAME [options]; results in artifacts/bench/NAME.json").WithGlobalOptions();
        foreach (var run in CreateRuns()) root.Subcommands.Add(run);
        // Listed for the help only: Main hands its arguments to BenchmarkDotNet before parsing.
        root.Subcommands.Add(new Command("bdn", "the BenchmarkDotNet classes (kernels; MemoryDiagnoser on): ./build.sh bench bdn [BenchmarkDotNet args]"));
        return CommandLineHost.Run(root, "bench", args);
    }
}
