using LiveDlrm.Tests.Perf;

namespace LiveDlrm.Tests.Cli;

/// <summary>Every run of the bench runner (<c>./build.sh bench NAME</c>, a child process as the user runs it): its
/// help lists its options, including every option it had under its own parser, and a bad option ends in exit code 2
/// with one line naming it.</summary>
internal class BenchCommandTests
{
    static readonly Dictionary<string, string> FormerOptions = new()
    {
        ["data"] = "--dir --events --reps",
        ["latency"] = "--base-events --batch --dim --load --max-qps --pooling --qos-target-ms --quick --rows --seconds --slo-factor --tables --trainer-rows --trainer-tables --trainer-threads --trial-seconds --warmup --workload --out",
        ["lookup"] = "--batch --cases --dim --livedlrm-prefetch --no-lora --out --pooling --prefetch --quick --rows --runs --seconds --threads",
        ["lora"] = "--batch --batches --budget --dim --hot --known-slots --out --pooling --quick --rank --rows --run-seconds --runs --storage --threads",
        ["model"] = "--seconds --train-events --warmup",
        ["pim"] = "--bags --batches --dim --dpus --out --pooling --quick --rows --run-seconds --runs --zipf",
        ["step"] = "--events --out --quick --run-seconds --runs",
        ["train"] = "--bags --budget --dim --out --pooling --quick --rank --rows --run-seconds --runs",
    };

    static IEnumerable<string> Runs() => FormerOptions.Keys;

    [Test]
    public void RootHelpListsEveryRun()
    {
        var (exit, output) = LookupBenchSmokeTests.RunPerf("--help");
        Assert.That(exit, Is.Zero, output);
        foreach (string run in Runs().Append("bdn")) Assert.That(output, Does.Contain($"  {run} "));
    }

    [TestCaseSource(nameof(Runs))]
    public void HelpListsEveryFormerOption(string run)
    {
        var (exit, output) = LookupBenchSmokeTests.RunPerf(run, "--help");
        Assert.That(exit, Is.Zero, output);
        foreach (string option in FormerOptions[run].Split(' '))
            Assert.That(output, Does.Match($@"(?m)^\s+{System.Text.RegularExpressions.Regex.Escape(option)}\b"), $"bench {run} --help lacks {option}");
    }

    [TestCaseSource(nameof(Runs))]
    public void BadOptionIsOneLineExitTwo(string run)
    {
        var (exit, output) = LookupBenchSmokeTests.RunPerf(run, "--no-such-option");
        Assert.That(exit, Is.EqualTo(2), output);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), output);
        Assert.That(lines[0], Does.StartWith($"bench {run}: ").And.Contain("--no-such-option"));
    }
}
