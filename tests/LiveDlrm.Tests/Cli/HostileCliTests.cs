using System.Collections.Concurrent;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Cli;

/// <summary>
/// The hostile CLI suite: every case of <see cref="HostileCliCases"/> runs the built <c>livedlrm</c> as a child
/// process in its own scratch folder (two at a time, each bounded by <see cref="HostileCliHarness.Timeout"/>) and must
/// end with the expected exit code, one <c>livedlrm CMD: ...</c> line naming the culprit, no stack trace, and every
/// file and folder that existed before byte-identical after. The totals are printed at the end.
/// </summary>
[Parallelizable(ParallelScope.Children)]
internal class HostileCliTests
{
    static string _lib = "", _root = "";
    static readonly ConcurrentBag<HostileOutcome> Outcomes = new();

    [OneTimeSetUp]
    public void BuildFixtures()
    {
        _root = Directory.CreateTempSubdirectory("livedlrm-hostile-").FullName;
        _lib = Path.Combine(_root, "lib");
        Directory.CreateDirectory(_lib);
        var world = new SyntheticStreamConfig { Users = 200, InitialItems = 50, MaxNewItems = 20 };
        SyntheticStreamFiles.Write(Path.Combine(_lib, "data.tsv"), world, 2000);
        var schema = StreamSchema.Load(Path.Combine(_lib, "data.schema.json"));
        TorchRuntime.EnsureInitialised();
        using var model = DlrmModel.Create(TrainingLoop.DefaultConfig(schema.Layout), 1);
        Checkpoint.Save(model, Path.Combine(_lib, "model"), new Dictionary<string, string> { ["events"] = "0" });
    }

    [OneTimeTearDown]
    public void Summarise()
    {
        var all = Outcomes.ToList();
        if (all.Count > 0)
            TestContext.Progress.WriteLine($"hostile CLI: {all.Count} cases, {all.Count(o => o.ClearError)} as expected (clear error or success), " +
                                           $"{all.Count(o => o.StackTrace)} stack traces, {all.Count(o => o.Damage.Count > 0)} with data lost or changed, " +
                                           $"{all.Count(o => o.TimedOut)} timed out");
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }

    public static IEnumerable<TestCaseData> Cases() => HostileCliCases.All.Select(c => new TestCaseData(c).SetName($"Hostile({c.Name})"));

    [Test]
    public void CaseNamesAreUniqueAndThereAreEnough()
    {
        var names = HostileCliCases.All.Select(c => c.Name).ToList();
        Assert.That(names, Is.Unique);
        Assert.That(names, Has.Count.GreaterThanOrEqualTo(150));
    }

    [TestCaseSource(nameof(Cases))]
    public void Hostile(HostileCase c)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "livedlrm.dll");
        // Scratch folders are numbered, not named after the case: a culprit must be found in the message, not in a path.
        string scratch = Path.Combine(_root, "cases", $"c{Array.IndexOf(HostileCliCases.All, c):D3}");
        var o = HostileCliHarness.Run(c, cli, _lib, scratch);
        Outcomes.Add(o);
        string context = $"args: {c.Args}\nexit {o.Exit}\nstderr:\n{o.Stderr}\nstdout (end):\n{Tail(o.Stdout)}";
        Assert.Multiple(() =>
        {
            Assert.That(o.TimedOut, Is.False, "timed out\n" + context);
            Assert.That(o.Exit, Is.EqualTo(c.Exit), "exit code\n" + context);
            Assert.That(o.StackTrace, Is.False, "stack trace\n" + context);
            Assert.That(o.Damage, Is.Empty, "files lost or changed\n" + context);
            if (c.Exit != 0)
            {
                Assert.That(o.ErrorLines, Has.Count.EqualTo(1), "one 'livedlrm CMD: ...' line\n" + context);
                Assert.That(o.ErrorLines.FirstOrDefault() ?? "", Does.Contain(c.Culprit).IgnoreCase, "the error names the culprit\n" + context);
            }
        });
        c.Check?.Invoke(scratch, o.Stderr + o.Stdout);
    }

    static string Tail(string s) => s.Length <= 600 ? s : "..." + s[^600..];
}
