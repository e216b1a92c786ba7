using LiveDlrm.Checkpoints;
using LiveDlrm.Tests.Cli;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Pim;

internal class PimPlanCommandTests
{
    static (string Message, string Out) BadInput(params string[] args) => CliRun.AssertBadInput(["pim-plan", .. args]);

    static (int Code, string Output) Run(params string[] args)
    {
        var r = CliRun.Invoke(["pim-plan", .. args]);
        return (r.Code, r.Output);
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
            BadInput("--tables", "50:8", "--trace", trace, "--bags", "10");   // id 99 outside 50 rows
            BadInput("--tables", "100:8,100:8", "--trace", trace);
        }
        finally { File.Delete(trace); }
        BadInput("--tables", "100x8");
        BadInput("--tables", "100:8", "--zipff", "1");
        var e = BadInput("--tables", "100000000:64", "--dpus", "2");
        Assert.That(e.Message, Does.Contain("use more DPUs"));
    }

    static DlrmConfig ModelConfig() => new(3, [8, 16], [8, 1],
        [new DlrmTableConfig("users", 4000, 16, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("items", 2500, 16, PoolingMode.Mean, EmbeddingStorage.Fp16),
         new DlrmTableConfig("hours", 24, 16, PoolingMode.Sum, EmbeddingStorage.Int8Rowwise)]);

    [Test]
    public void PlansEveryTableOfAModelConfigWithPerTableTraces()
    {
        string dir = Directory.CreateTempSubdirectory("pim-plan-model-").FullName;
        try
        {
            string config = Path.Combine(dir, "model.json");
            File.WriteAllText(config, ModelConfig().ToJson());
            string trace = Path.Combine(dir, "items.trace");
            File.WriteAllLines(trace, Enumerable.Range(0, 40).Select(i => $"{i % 17} {(i * 37) % 2500}"));

            var (code, output) = Run("--model", config, "--dpus", "8", "--trace", $"items={trace}", "--batches", "4", "--bags", "10", "--pooling", "4");
            Assert.That(code, Is.Zero);
            Assert.That(output, Does.Contain("3 tables"));
            Assert.That(output, Does.Contain("table 'users' 4000 x 16 fp32").And.Contain("zipf(1.05) over 4000 rows"));
            Assert.That(output, Does.Contain("table 'items' 2500 x 16 fp32").And.Contain("[host stores Fp16; the DPU kernel reads fp32]").And.Contain("trace items.trace"));
            Assert.That(output, Does.Contain("table 'hours' 24 x 16").And.Contain("host stores Int8Rowwise"));
            Assert.That(System.Text.RegularExpressions.Regex.Matches(output, @"^MODEL total us / batch\s+\d", System.Text.RegularExpressions.RegexOptions.Multiline).Count,
                        Is.EqualTo(3), "one comparison per table");
            // Last, the whole model on one server-sized set: the model's estimate beside the CPU kernel measured here.
            Assert.That(output, Does.Contain("whole model on a 2560-DPU UPMEM server: 3 tables in one DPU set"));
            Assert.That(output, Does.Contain("ESTIMATE (cost model, not a measurement) fp32").And.Contain("ESTIMATE (cost model, not a measurement) int32"));
            Assert.That(output, Does.Contain("MEASURED CPU embedding-bag kernel on this machine").And.Contain("UpDLRM reports up to 4.6x"));

            BadInput("--model", config, "--trace", trace);                       // which table?
            BadInput("--model", config, "--trace", $"movies={trace}");            // no such table
            BadInput("--model", config, "--trace", $"items={trace}.missing");
            BadInput("--model", config, "--tables", "100:8");                    // both
            BadInput("--dpus", "8");                                             // neither
            BadInput("--model", Path.Combine(dir, "nothing-here"));
            File.WriteAllText(Path.Combine(dir, "broken.json"), "{ \"tables\": 3 }");
            var e = BadInput("--model", Path.Combine(dir, "broken.json"));
            Assert.That(e.Message, Does.Contain("broken.json"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void PlansTheTablesOfACheckpointDirectory()
    {
        TorchRuntime.EnsureInitialised();
        string dir = Path.Combine(Path.GetTempPath(), $"pim-plan-ckpt-{Environment.ProcessId}");
        try
        {
            using (var model = DlrmModel.Create(ModelConfig(), 3)) Checkpoint.Save(model, dir);
            var (code, output) = Run("--model", dir, "--dpus", "4", "--batches", "2", "--bags", "8", "--pooling", "4");
            Assert.That(code, Is.Zero);
            Assert.That(output, Does.Contain("(checkpoint): 3 tables"));
            Assert.That(output, Does.Contain("table 'users' 4000 x 16").And.Contain("table 'items' 2500 x 16").And.Contain("table 'hours' 24 x 16"));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
    }
}
