using LiveDlrm.Cli;
using LiveDlrm.Cli.Commands;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Replay;

/// <summary>The replay command's option checks: bad input is refused with the option named, before any work.</summary>
public class ReplayCommandTests
{
    static int Run(params string[] args) => new ReplayCommand().Run(new CommandArgs(args));

    [TestCase(new[] { "--min-rank", "9", "--max-rank", "8" }, "--min-rank 9 exceeds --max-rank 8")]
    [TestCase(new[] { "--rank", "2", "--min-rank", "4" }, "--rank 2 is below --min-rank 4")]
    [TestCase(new[] { "--rank", "32", "--max-rank", "16" }, "--rank 32 exceeds --max-rank 16")]
    [TestCase(new[] { "--live-backend", "gpu" }, "--live-backend must be cpu or pim")]
    [TestCase(new[] { "--last-layer", "maybe" }, "--last-layer must be on or off")]
    [TestCase(new[] { "--bursts-per-hour", "-1" }, "bursts-per-hour")]
    [TestCase(new[] { "--hashed-rows", "-5" }, "hashed-rows")]
    [TestCase(new[] { "--mode", "fresh" }, "--mode: 'fresh'")]
    public void BadOptionsAreRefusedByName(string[] args, string message)
    {
        TorchRuntime.EnsureInitialised();
        Assert.That(() => Run([.. args, "--events", "1000", "--no-plots", "--out", Path.GetTempPath()]),
            Throws.TypeOf<UsageException>().With.Message.Contains(message));
    }

    [Test]
    public void WorldOptionsApplyToTheSyntheticStreamOnly()
    {
        string file = Path.Combine(Path.GetTempPath(), $"replay-cmd-{Environment.ProcessId}.tsv");
        File.WriteAllText(file, "");
        try
        {
            Assert.That(() => Run("--data", file, "--hashed-rows", "1024", "--no-plots"),
                Throws.TypeOf<UsageException>().With.Message.Contains("apply to --data synthetic only"));
        }
        finally { File.Delete(file); }
    }
}
