using LiveDlrm.Tests.Cli;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Replay;

/// <summary>The replay command's option checks: bad input is refused with the option named, before any work.</summary>
internal class ReplayCommandTests
{
    static string BadInput(params string[] args) => CliRun.AssertBadInput(["replay", .. args]).Message;

    [TestCase(new[] { "--min-rank", "9", "--max-rank", "8" }, "--min-rank 9 exceeds --max-rank 8")]
    [TestCase(new[] { "--rank", "2", "--min-rank", "4" }, "--rank 2 is below --min-rank 4")]
    [TestCase(new[] { "--rank", "32", "--max-rank", "16" }, "--rank 32 exceeds --max-rank 16")]
    [TestCase(new[] { "--live-backend", "gpu" }, "--live-backend: 'gpu' is not one of cpu, pim")]
    [TestCase(new[] { "--last-layer", "maybe" }, "--last-layer: 'maybe' is not one of on, off")]
    [TestCase(new[] { "--bursts-per-hour", "-1" }, "bursts-per-hour")]
    [TestCase(new[] { "--hashed-rows", "-5" }, "hashed-rows")]
    [TestCase(new[] { "--mode", "fresh" }, "--mode: 'fresh'")]
    public void BadOptionsAreRefusedByName(string[] args, string message)
    {
        TorchRuntime.EnsureInitialised();
        Assert.That(BadInput([.. args, "--events", "1000", "--no-plots", "--out", Path.GetTempPath()]), Does.Contain(message));
    }

    [Test]
    public void WorldOptionsApplyToTheSyntheticStreamOnly()
    {
        string file = Path.Combine(Path.GetTempPath(), $"replay-cmd-{Environment.ProcessId}.tsv");
        File.WriteAllText(file, "");
        try
        {
            Assert.That(BadInput("--data", file, "--hashed-rows", "1024", "--no-plots"), Does.Contain("apply to --data synthetic only"));
        }
        finally { File.Delete(file); }
    }
}
