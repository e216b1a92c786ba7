using LiveDlrm.Cli;
using LiveDlrm.Cli.Commands;

namespace LiveDlrm.Tests.Pim;

public class PimPlanCommandTests
{
    static (int Code, string Output) Run(params string[] args)
    {
        var previous = Console.Out;
        var writer = new StringWriter();
        Console.SetOut(writer);
        try { return (new PimPlanCommand().Run(new CommandArgs(args)), writer.ToString()); }
        finally { Console.SetOut(previous); }
    }

    [Test]
    public void ComparesEveryStrategyForEachTable()
    {
        var (code, output) = Run("--tables", "5000:16,3000:200", "--dpus", "16", "--batches", "4", "--bags", "32", "--pooling", "8");
        Assert.That(code, Is.Zero);
        Assert.That(output, Does.Contain("table 5000 x 16").And.Contain("table 3000 x 200"));
        foreach (var s in Enum.GetNames<LiveDlrm.Pim.PimStrategy>()) Assert.That(output, Does.Contain(s));
        Assert.That(output, Does.Contain("MODEL total us / batch").And.Contain("cost model estimate"));
        Assert.That(output, Does.Contain("16 x 1 (16)"), "dim 16: one tile per row");
        Assert.That(output, Does.Contain("16 x 2 (100)"), "dim 200: two tiles of 100 floats");
    }

    [Test]
    public void ReadsATraceAndRejectsBadInput()
    {
        string trace = Path.Combine(Path.GetTempPath(), $"pim-trace-{Environment.ProcessId}.txt");
        File.WriteAllLines(trace, Enumerable.Range(0, 40).Select(i => $"{i % 7} {i % 13},{(i * 31) % 100}  # bag {i}"));
        try
        {
            var (code, output) = Run("--tables", "100:8", "--dpus", "4", "--trace", trace, "--bags", "10");
            Assert.That(code, Is.Zero);
            Assert.That(output, Does.Contain("trace pim-trace-"));
            Assert.Throws<UsageException>(() => Run("--tables", "50:8", "--trace", trace, "--bags", "10"));   // id 99 outside 50 rows
            Assert.Throws<UsageException>(() => Run("--tables", "100:8,100:8", "--trace", trace));
        }
        finally { File.Delete(trace); }
        Assert.Throws<UsageException>(() => Run("--tables", "100x8"));
        Assert.Throws<UsageException>(() => Run("--tables", "100:8", "--zipff", "1"));
        var e = Assert.Throws<UsageException>(() => Run("--tables", "100000000:64", "--dpus", "2"));
        Assert.That(e!.Message, Does.Contain("use more DPUs"));
    }
}
