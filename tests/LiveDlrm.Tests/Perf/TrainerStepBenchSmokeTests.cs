using System.Text.Json;

namespace LiveDlrm.Tests.Perf;

/// <summary>Runs <c>bench step --quick</c> end to end (child process) and checks its JSON: both cases timed, every step
/// applied. Proves the harness works; asserts no speed.</summary>
internal class TrainerStepBenchSmokeTests
{
    [Test]
    public void QuickStepRunTimesBothCasesWithEveryStepApplied()
    {
        string dir = Path.Combine(Path.GetTempPath(), "livedlrm-step-" + Guid.NewGuid().ToString("N"));
        string json = Path.Combine(dir, "step.json");
        try
        {
            var (exit, output) = LookupBenchSmokeTests.RunPerf("step", "--quick", "--out", json);
            Assert.That(exit, Is.EqualTo(0), output);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var root = doc.RootElement;
            foreach (string name in new[] { "reuse", "no_reuse" })
            {
                var c = root.GetProperty("cases").GetProperty(name);
                Assert.That(c.GetProperty("kevents_per_s").GetDouble(), Is.GreaterThan(0), $"{name}: no rate");
                Assert.That(c.GetProperty("steps").GetInt64(), Is.GreaterThan(0), $"{name}: no step ran");
                Assert.That(c.GetProperty("rejected_steps").GetInt64(), Is.EqualTo(0), $"{name}: steps were rejected\n{output}");
                Assert.That(c.GetProperty("active_rows").GetInt64(), Is.GreaterThan(0), $"{name}: the adapters learned nothing");
            }
            double ratio = root.GetProperty("reuse_time_ratio").GetDouble();
            Assert.That(double.IsFinite(ratio) && ratio > 0, Is.True, $"reuse_time_ratio = {ratio}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void AnUnknownOptionIsRefusedByName()
    {
        var (exit, output) = LookupBenchSmokeTests.RunPerf("step", "--quick", "--bogus", "1");
        Assert.That(exit, Is.EqualTo(2), output);
        Assert.That(output, Does.StartWith("bench step: ").And.Contain("'--bogus'"));
    }
}
