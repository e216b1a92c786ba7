using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace LiveDlrm.Perf;

/// <summary>A comparative run: several implementations timed in one process on the same inputs, medians
/// reported, results written to artifacts/bench/NAME.json. Found by reflection, one class a run.</summary>
public interface IComparativeRun
{
    string Name { get; }
    string Summary { get; }
    int Run(string[] args);
}

public static class Program
{
    static readonly IReadOnlyList<IComparativeRun> Runs = typeof(Program).Assembly.GetTypes()
        .Where(t => typeof(IComparativeRun).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
        .Select(t => (IComparativeRun)Activator.CreateInstance(t)!)
        .OrderBy(r => r.Name, StringComparer.Ordinal).ToList();

    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "bdn")
        {
            // BenchmarkDotNet classes: ./build.sh bench bdn --filter '*EmbeddingBag*'; reports land next to lookup.json.
            var config = DefaultConfig.Instance.WithArtifactsPath(Path.Combine(Lookup.LookupRun.RepoRoot(), "artifacts", "bench", "bdn"));
            BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args[1..], config);
            return 0;
        }
        if (args.Length == 0 || args[0] is "--help" or "-h")
        {
            Console.WriteLine("usage: ./build.sh bench NAME [options]     ./build.sh bench bdn [BenchmarkDotNet args]");
            foreach (var r in Runs) Console.WriteLine($"  {r.Name,-10} {r.Summary}");
            Console.WriteLine($"  {"bdn",-10} the BenchmarkDotNet classes (kernels; MemoryDiagnoser on)");
            return args.Length == 0 ? 2 : 0;
        }
        var run = Runs.FirstOrDefault(r => r.Name == args[0]);
        if (run is null)
        {
            Console.Error.WriteLine($"bench: unknown run '{args[0]}'; known: {string.Join(", ", Runs.Select(r => r.Name))}, bdn");
            return 2;
        }
        return run.Run(args[1..]);
    }
}
