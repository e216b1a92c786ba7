using System.Text.Json;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Online;
using LiveDlrm.Replay;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Cli;

namespace LiveDlrm.Tests.Replay;

/// <summary>The cost/accuracy sweep (<c>replay --sweep</c>): it runs the replay's own modes, each delta point from
/// the same base trainer state, and writes pareto.png and report.json's sweep[] without replacing what is not its own.</summary>
internal class ReplaySweepTests
{
    string _dir = null!;

    [SetUp]
    public void Init()
    {
        TorchRuntime.EnsureInitialised();
        _dir = Path.Combine(Path.GetTempPath(), "livedlrm-sweep-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void Cleanup()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    static ReplayOptions SmallOptions() => new()
    {
        ServeBatch = 128, BasePrefixFraction = 0.3, BottomMlp = [16, 16], TopMlp = [32, 1], WindowSeconds = 3600,
        OnlineTrainer = new OnlineTrainerOptions
        {
            BatchSize = 128, MaxBatchWait = null,
            Adapter = new AdapterOptions { InitialRank = 4, MaxRank = 8, RankAdaptInterval = 50, BudgetFraction = 0.05 },
        },
    };

    static SyntheticEventSource Stream() => new(new SyntheticStreamConfig
    {
        Seed = 5, Drift = 3, EventsPerSecond = 1, Users = 800, InitialItems = 400, MaxNewItems = 800,
    }, 16_000);

    [Test]
    public void EachDeltaPointContinuesTheBaseTrainerAsAPlainReplayDoes()
    {
        // A plain delta replay continues the base trainer itself; the sweep gives each point its own fork. With the
        // same interval the two must be the same run: a fork that shared optimizer state with the base trainer, or
        // missed part of it, would step differently.
        var options = SmallOptions() with { Modes = [UpdateMode.Delta], SyncIntervalSeconds = 900, SyncDelaySeconds = 300 };
        var plain = new FreshnessReplay(Stream, options, "s").Run().Mode(UpdateMode.Delta)!;
        var sweep = new FreshnessReplay(Stream, options, "s").RunSweep([SweepPoint.Delta(900, 300), SweepPoint.Delta(900, 300), SweepPoint.Delta(3600, 1200)]);

        Assert.That(sweep.Sweep, Has.Count.EqualTo(3));
        foreach (var p in sweep.Sweep!.Take(2))
        {
            Assert.That(p.Result.Overall.Auc, Is.EqualTo(plain.Overall.Auc), p.Point.Label);
            Assert.That(p.Result.Overall.LogLoss, Is.EqualTo(plain.Overall.LogLoss), p.Point.Label);
            Assert.That(p.Result.Cost.NetworkBytes, Is.EqualTo(plain.Cost.NetworkBytes), p.Point.Label);
        }
        var hourly = sweep.Sweep![2].Result;
        Assert.That(hourly.Cost.Syncs, Is.LessThan(plain.Cost.Syncs), "a longer interval syncs less often");
        Assert.That(sweep.Mode(UpdateMode.Stale), Is.Not.Null, "stale runs once as the reference");
        Assert.That(sweep.Mode(UpdateMode.Delta)!.Overall.Auc, Is.EqualTo(plain.Overall.Auc), "modes.delta is the point at the options' own interval");
    }

    [Test]
    public void ASmallSweepWritesTheFrontierPlotAndEveryPointInTheReport()
    {
        var r = CliRun.Invoke("replay", "--sweep", "--events", "12000", "--events-per-second", "2", "--users", "600", "--items", "300",
                              "--new-items", "300", "--hashed-rows", "65536", "--dim", "16", "--out", _dir);
        Assert.That(r.Code, Is.EqualTo(0), r.Output);
        TestContext.Out.WriteLine(r.Out);
        Assert.That(r.Out, Does.Contain("cost/accuracy sweep"));
        string png = Path.Combine(_dir, "pareto.png");
        Assert.That(File.ReadAllBytes(png).Take(4), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47 }));

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "report.json")));
        var sweep = doc.RootElement.GetProperty("sweep").EnumerateArray().ToList();
        Assert.That(sweep.Select(p => p.GetProperty("mode").GetString()),
                    Is.EqualTo(new[] { "delta", "delta", "delta", "delta", "delta", "live", "live", "live", "live" }));
        Assert.That(sweep.Take(5).Select(p => p.GetProperty("sync_interval_seconds").GetInt64()), Is.EqualTo(new long[] { 60, 300, 600, 1800, 3600 }));
        Assert.That(sweep.Take(5).Select(p => p.GetProperty("sync_delay_seconds").GetInt64()), Is.EqualTo(new long[] { 30, 150, 300, 900, 1800 }));
        Assert.That(sweep.Skip(5).Select(p => p.GetProperty("adapter_budget_pct").GetDouble()), Is.EqualTo(new[] { 0.25, 0.5, 1, 2 }));
        foreach (var p in sweep)
        {
            Assert.That(p.GetProperty("auc").GetDouble(), Is.InRange(0.5, 1.0), p.GetProperty("label").GetString());
            Assert.That(p.GetProperty("cpu_seconds").GetDouble(), Is.GreaterThan(0), p.GetProperty("label").GetString());
        }
        // Delta ships less the longer it waits: fewer syncs, each dense payload shipped once per sync.
        var bytes = sweep.Take(5).Select(p => p.GetProperty("network_bytes").GetInt64()).ToList();
        Assert.That(bytes, Is.Ordered.Descending);
        Assert.That(doc.RootElement.GetProperty("modes").EnumerateObject().Select(m => m.Name), Is.EquivalentTo(new[] { "stale", "delta", "live" }));
    }

    [TestCase("--sync-interval", "60")]
    [TestCase("--sync-delay", "60")]
    [TestCase("--budget", "0.02")]
    [TestCase("--mode", "live")]
    public void OptionsTheSweepSetsItselfAreRefused(string option, string value)
    {
        var (message, _) = CliRun.AssertBadInput("replay", "--sweep", option, value, "--events", "1000", "--out", _dir);
        Assert.That(message, Does.Contain($"{option} does not apply with --sweep"));
        Assert.That(Directory.EnumerateFileSystemEntries(_dir), Is.Empty, "nothing written");
    }

    [TestCase("report.json", "my notes, not a report")]
    [TestCase("pareto.png", "a text file named like the plot")]
    public void FilesThatAreNotTheReplaysOwnAreNotReplaced(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        var (message, _) = CliRun.AssertBadInput("replay", "--sweep", "--events", "1000", "--out", _dir);
        Assert.That(message, Does.Contain(name).And.Contain("not replacing it"));
        Assert.That(File.ReadAllText(path), Is.EqualTo(content));
        Assert.That(Directory.EnumerateFileSystemEntries(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { name }), "nothing else written");
    }
}
