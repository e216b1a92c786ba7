using LiveDlrm.Tests.Cli;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;

namespace LiveDlrm.Tests.Pim;

internal class PimServeCommandTests
{
    static (string Message, string Out) BadInput(params string[] args) => CliRun.AssertBadInput(["pim-serve", .. args]);

    static (int Code, string Output) Run(params string[] args)
    {
        var r = CliRun.Invoke(["pim-serve", .. args]);
        return (r.Code, r.Output);
    }

    static string WriteConfig(string dir, EmbeddingStorage storage)
    {
        var config = new DlrmConfig(3, [8, 8], [8, 1],
            [new DlrmTableConfig("users", 3000, 8, PoolingMode.Sum, storage),
             new DlrmTableConfig("items", 800, 8, PoolingMode.Mean, storage)]);
        string path = Path.Combine(dir, $"model-{storage}.json");
        File.WriteAllText(path, config.ToJson());
        return path;
    }

    [Test]
    public void ServesAModelFromTheEmulationWithTheCpuScores()
    {
        PimTestSupport.RequireLibrary();
        string dir = Directory.CreateTempSubdirectory("pim-serve-").FullName;
        try
        {
            string config = WriteConfig(dir, EmbeddingStorage.Fp32);
            var (code, output) = Run("--model", config, "--backend", PimTestSupport.Backend.ToString(), "--dpus", "4", "--strategy", "cacheaware",
                                     "--events", "256", "--batch", "64");
            Assert.That(code, Is.Zero, output);
            Assert.That(output, Does.Contain("256 requests in 4 batches, 2 tables on pim-").And.Contain("(CacheAware, one set of 4 DPUs shared by the tables)"));
            Assert.That(output, Does.Contain("max |score difference| PIM vs CPU"));
            Assert.That(output, Does.Contain("  users ").And.Contain("  items "));
            Assert.That(output, Does.Contain("table 'users' loaded as table 0 of a 4-DPU set, CacheAware"));

            BadInput("--model", config, "--strategy", "diagonal");
            BadInput("--model", config, "--backend", "quantum");
            var e = BadInput("--model", WriteConfig(dir, EmbeddingStorage.Fp16), "--backend", "emulated");
            Assert.That(e.Message, Does.Contain("Fp16"));
            BadInput("--model", Path.Combine(dir, "missing"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
