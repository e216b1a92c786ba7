using System.Text.Json;
using LiveDlrm.Cli;
using LiveDlrm.Tests.Cli;
using LiveDlrm.CommandLine;
using System.CommandLine;
using LiveDlrm.Data;
using LiveDlrm.Metrics;

namespace LiveDlrm.Tests.Data;

internal class SynthCommandTests
{
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("ldlm-synthcli-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void WritesStreamSchemaAndOptimumThatAgreeWithEachOther()
    {
        string tsv = Path.Combine(_dir, "stream.tsv");
        var run = CliRun.Invoke("synth", "--out", tsv, "--events", "20000", "--seed", "4", "--drift", "0.5", "--users", "3000", "--items", "800");
        Assert.That(run.Code, Is.Zero, run.Output);
        var output = run.Out;

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "stream.optimum.json")));
        double optimum = json.RootElement.GetProperty("optimum_auc").GetDouble();
        Assert.That(json.RootElement.GetProperty("events").GetInt64(), Is.EqualTo(20000));
        Assert.That(output, Does.Contain($"optimum AUC  {optimum:F4}"));

        // Read through the generic --data path (schema found beside the file) and recompute the optimum.
        var options = new DataSourceOptions { Data = tsv, OnBadLine = BadLinePolicy.Fail };
        Assert.That(options.ResolveSchema().Path, Is.EqualTo(Path.Combine(_dir, "stream.schema.json")));
        using var source = options.Open();
        var all = EventBatchAssert.Drain(source, 4096);
        Assert.That(all.Count, Is.EqualTo(20000));
        Assert.That(BinaryMetrics.Auc(all.TrueProbabilities, all.Labels), Is.EqualTo(optimum).Within(1e-12));
        Assert.That(source.Schema.Sparse.Single(s => s.Name == "user_id").Rows, Is.EqualTo(3000));
    }

    [Test]
    public void BadOptionsAreUsageErrors()
    {
        Assert.That(CliRun.AssertBadInput("synth", "--events", "10").Message, Does.Contain("--out"));
        Assert.That(CliRun.AssertBadInput("synth", "--out", Path.Combine(_dir, "x.tsv"), "--drift", "-1").Message, Does.Contain("--drift"));
        Assert.That(CliRun.AssertBadInput("synth", "--out", Path.Combine(_dir, "x.tsv"), "--seed", "abc").Message, Does.Contain("--seed"));
        Assert.That(CliRun.AssertBadInput("synth", "--out", Path.Combine(_dir, "x.tsv"), "--evnts", "5").Message, Does.Contain("--evnts"));
        Assert.That(File.Exists(Path.Combine(_dir, "x.tsv")), Is.False);
    }

    /// <summary>The shared data options on a bare command; parse errors surface as the host would report them.</summary>
    static DataSourceOptions ParseDataSource(params string[] args)
    {
        var options = new DataSourceArgs(DataSourceOptions.DefaultSyntheticEvents);
        var command = new Command("data");
        options.AddTo(command);
        var result = command.Parse(args);
        if (result.Errors.Count > 0) throw new UsageException(result.Errors[0].Message);
        return options.Get(result);
    }

    [Test]
    public void DataSourceArgsParseSyntheticAndFileSources()
    {
        var synthetic = ParseDataSource("--events", "500", "--seed", "9", "--drift", "0");
        Assert.That(synthetic.IsSynthetic);
        using (var s = synthetic.Open())
        {
            Assert.That(s, Is.TypeOf<SyntheticEventSource>());
            Assert.That(EventBatchAssert.Drain(s).Count, Is.EqualTo(500));
        }

        string tsv = Path.Combine(_dir, "c.tsv");
        File.WriteAllText(tsv, "1\t" + string.Join('\t', Enumerable.Repeat("3", 13)) + "\t" + string.Join('\t', Enumerable.Repeat("a1b2", 26)) + "\n");
        var file = ParseDataSource("--data", tsv, "--bad-lines", "fail", "--events", "5");
        Assert.That(file.ResolveSchema().Description, Does.Contain("Criteo"));
        using (var s = file.Open())
            Assert.That(EventBatchAssert.Drain(s).Count, Is.EqualTo(1));

        Assert.That(() => ParseDataSource("--data", Path.Combine(_dir, "missing.tsv")),
                    Throws.TypeOf<UsageException>().With.Message.Contains("does not exist"));
        Assert.That(() => ParseDataSource("--schema", tsv),
                    Throws.TypeOf<UsageException>().With.Message.Contains("--schema"));
        Assert.That(() => ParseDataSource("--data", tsv, "--cache", "sometimes"),
                    Throws.TypeOf<UsageException>().With.Message.Contains("--cache: 'sometimes' is not one of off, auto, rebuild"));
    }

    [Test]
    public void LimitedSourceStopsAtTheLimitAcrossBatches()
    {
        using var limited = new LimitedEventSource(new SyntheticEventSource(new SyntheticStreamConfig { Users = 100, InitialItems = 50 }, 1000), 250);
        var b = new EventBatch(limited.Schema.Layout, 100);
        var counts = new List<int>();
        while (limited.Read(b) > 0) counts.Add(b.Count);
        Assert.That(counts, Is.EqualTo(new[] { 100, 100, 50 }));
        Assert.That(b.Offsets(0).Length, Is.EqualTo(1), "an exhausted read leaves an empty, well-formed batch");
    }
}
