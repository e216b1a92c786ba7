using System.Diagnostics;
using System.Globalization;

namespace LiveDlrm.Fuzz;

/// <summary>
/// <c>livedlrm-fuzz [TARGET|all] [--seconds N] [--corpus DIR]</c>: runs the fuzz properties for N seconds each
/// (default 60) and prints executions and unexpected exceptions per target. Each unexpected exception's first input
/// is saved under DIR/TARGET/ (the regression corpus the unit tests replay). Exit 1 when any was found.
/// <c>TARGET --replay FILE</c> runs one saved input. <c>--last-input FILE</c> writes each input to FILE before running it, to catch what a native crash ran on.
/// </summary>
internal static class Program
{
    public static int Main(string[] args)
    {
        string which = "all";
        int seconds = 60;
        string? corpus = null, lastInput = null, replay = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds" when i + 1 < args.Length && int.TryParse(args[i + 1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int s) && s > 0:
                    seconds = s; i++; break;
                case "--corpus" when i + 1 < args.Length:
                    corpus = args[++i]; break;
                case "--last-input" when i + 1 < args.Length:
                    lastInput = args[++i]; break;
                case "--replay" when i + 1 < args.Length:
                    replay = args[++i]; break;
                case "--help" or "-h":
                    Console.WriteLine("usage: fuzz [TARGET|all] [--seconds N] [--corpus DIR]");
                    foreach (var t in FuzzTargets.All) Console.WriteLine($"  {t.Name,-9} {t.Description}");
                    return 0;
                default:
                    if (args[i].StartsWith('-') || which != "all") { Console.Error.WriteLine($"fuzz: unexpected argument '{args[i]}' (see --help)"); return 2; }
                    which = args[i]; break;
            }
        }
        IReadOnlyList<FuzzTarget> targets;
        try { targets = which == "all" ? FuzzTargets.All : [FuzzTargets.Get(which)]; }
        catch (ArgumentException e) { Console.Error.WriteLine($"fuzz: {e.Message}"); return 2; }

        if (replay is not null)
        {
            string dir = Directory.CreateTempSubdirectory("livedlrm-fuzz-replay-").FullName;
            var error = FuzzRun.Replay(targets[0], dir, File.ReadAllBytes(replay));
            Directory.Delete(dir, recursive: true);
            Console.WriteLine(error is null ? $"fuzz {targets[0].Name}: {replay} runs clean" : $"fuzz {targets[0].Name}: {replay}: {error}");
            return error is null ? 0 : 1;
        }

        int found = 0;
        foreach (var target in targets)
        {
            string scratch = Directory.CreateTempSubdirectory($"livedlrm-fuzz-{target.Name}-").FullName;
            try
            {
                var sw = Stopwatch.StartNew();
                var r = FuzzRun.Collect(target, scratch, seconds, lastInput: lastInput);
                Console.WriteLine($"fuzz {target.Name}: {r.Executions} executions in {sw.Elapsed.TotalSeconds:F0} s ({r.Executions / sw.Elapsed.TotalSeconds:F0}/s), " +
                                  $"{r.AllowedExceptions} documented errors, {r.Unexpected.Count} unexpected exception{(r.Unexpected.Count == 1 ? "" : "s")}");
                foreach (var (signature, (error, input)) in r.Unexpected)
                {
                    found++;
                    Console.WriteLine($"  unexpected: {signature}: {error.Message}");
                    if (corpus is null) continue;
                    string dir = Path.Combine(corpus, target.Name);
                    Directory.CreateDirectory(dir);
                    string file = Path.Combine(dir, FuzzRun.CorpusName(input));
                    File.WriteAllBytes(file, input);
                    Console.WriteLine($"    input saved: {file}");
                }
            }
            finally
            {
                try { Directory.Delete(scratch, recursive: true); } catch (IOException) { }
            }
        }
        return found == 0 ? 0 : 1;
    }
}
