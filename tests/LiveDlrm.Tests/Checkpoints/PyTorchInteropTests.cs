using System.Diagnostics;
using System.Text.Json;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Cli;

namespace LiveDlrm.Tests.Checkpoints;

/// <summary>
/// Interop with real PyTorch (Debian's python3-torch, installed by build.sh): reference_dlrm.py builds a module laid
/// out like facebookresearch/dlrm's DLRM_Net, saves it the way dlrm_s_pytorch.py --save-model does and scores random
/// inputs; the engine must import the file, infer its architecture and give the same scores — and PyTorch must load
/// and score what the engine exports.
/// </summary>
[NonParallelizable]
internal class PyTorchInteropTests
{
    // Debian's interpreter: python3-torch installs for it, while `python3` on PATH may be another one.
    const string Python = "/usr/bin/python3";
    const double Tolerance = 1e-5;

    static readonly string Script = Path.Combine(TestContext.CurrentContext.TestDirectory, "Checkpoints", "reference_dlrm.py");
    string _root = "";

    /// <summary>Spec of the written module: dense features (0 = id-only: no bot_l), bottom / top widths, table rows.</summary>
    static readonly Dictionary<string, object> WithDense = new()
    {
        ["dense"] = 4, ["bot"] = new[] { 8, 4 }, ["top"] = new[] { 8, 1 }, ["tables"] = new[] { 50, 33, 17 }, ["dim"] = 4, ["self"] = false, ["seed"] = 3,
    };
    static readonly Dictionary<string, object> IdOnly = new()
    {
        ["dense"] = 0, ["bot"] = Array.Empty<int>(), ["top"] = new[] { 16, 8, 1 }, ["tables"] = new[] { 40, 25, 9, 60 }, ["dim"] = 8, ["self"] = true, ["seed"] = 5,
    };

    [OneTimeSetUp]
    public void Init()
    {
        TorchRuntime.EnsureInitialised();
        Directory.CreateDirectory(_root = Path.Combine(Path.GetTempPath(), $"livedlrm-torch-{Guid.NewGuid():N}"));
    }

    [OneTimeTearDown]
    public void DeleteRoot() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    static string RunPython(params string[] args)
    {
        Assert.That(File.Exists(Python), Is.True, $"{Python} is missing (build.sh installs python3-torch)");
        var info = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Script);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.That(process.WaitForExit(120_000), Is.True, "reference_dlrm.py did not finish within 2 minutes");
        Assert.That(process.ExitCode, Is.Zero, $"reference_dlrm.py {string.Join(' ', args)} failed:\n{stderr.Result}");
        return stdout;
    }

    /// <summary>Writes the PyTorch module of <paramref name="spec"/> (once per spec) and returns its directory.</summary>
    string Written(string name, Dictionary<string, object> spec)
    {
        string dir = Path.Combine(_root, name);
        if (Directory.Exists(dir)) return dir;
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "spec.json"), JsonSerializer.Serialize(spec));
        RunPython("write", dir, Path.Combine(dir, "spec.json"));
        return dir;
    }

    static EventBatch ReadInputs(string file, DlrmConfig config)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var root = doc.RootElement;
        var dense = root.GetProperty("dense").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();
        var offsets = root.GetProperty("offsets").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToArray();
        var indices = root.GetProperty("indices").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetInt64()).ToArray()).ToArray();
        var layout = new EventBatchLayout(config.DenseFeatures,
            config.Tables.Select((t, i) => new SparseFeatureLayout($"f{i}", t.Name, t.Rows)).ToArray());
        var batch = new EventBatch(layout, dense.Length, 3);
        for (int e = 0; e < dense.Length; e++)
        {
            int row = batch.AddEvent(0, e, e);
            dense[e].AsSpan(0, config.DenseFeatures).CopyTo(batch.DenseRowForWrite(row));
            for (int t = 0; t < config.Tables.Count; t++)
            {
                int end = e + 1 < dense.Length ? offsets[t][e + 1] : indices[t].Length;
                for (int k = offsets[t][e]; k < end; k++) batch.AddIndex(t, indices[t][k]);
            }
        }
        return batch;
    }

    static float[] ReadScores(string file) => JsonSerializer.Deserialize<float[]>(File.ReadAllText(file))!;

    static double MaxDifference(float[] a, float[] b)
    {
        Assert.That(a, Has.Length.EqualTo(b.Length));
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }

    [TestCase("dense")]
    [TestCase("id-only")]
    public void ImportsTheSaveModelDictOfPyTorchAndScoresAsPyTorchDoes(string variant)
    {
        var spec = variant == "dense" ? WithDense : IdOnly;
        string dir = Written(variant, spec);
        using var model = PyTorchStateDict.Import(Path.Combine(dir, "model.pt"));
        var config = model.Config;
        Assert.That(config.DenseFeatures, Is.EqualTo(spec["dense"]));
        Assert.That(config.BottomMlp, Is.EqualTo(spec["bot"]));
        Assert.That(config.TopMlp, Is.EqualTo(spec["top"]));
        Assert.That(config.Tables.Select(t => t.Rows), Is.EqualTo(((int[])spec["tables"]).Select(r => (long)r)));
        Assert.That(config.Dim, Is.EqualTo(spec["dim"]));
        Assert.That(config.SelfInteraction, Is.EqualTo(spec["self"]));

        var batch = ReadInputs(Path.Combine(dir, "inputs.json"), config);
        double delta = MaxDifference(model.Predict(batch), ReadScores(Path.Combine(dir, "scores.json")));
        TestContext.Out.WriteLine($"{variant}: PyTorch-written checkpoint, {batch.Count} events, max |Δ score| vs PyTorch forward = {delta:E2}");
        Assert.That(delta, Is.LessThan(Tolerance));
    }

    [TestCase("dense", true)]
    [TestCase("id-only", false)]
    public void PyTorchLoadsTheExportStrictlyAndScoresAsTheEngineDoes(string variant, bool wrapped)
    {
        var spec = variant == "dense" ? WithDense : IdOnly;
        string dir = Written(variant, spec);
        // A model of the same shape with other weights (int8 storage: the export dequantises).
        var shape = PyTorchStateDict.ReadArchitecture(Path.Combine(dir, "model.pt"));
        var config = new DlrmConfig(shape.DenseFeatures, shape.BottomMlp, shape.TopMlp,
            shape.Tables.Select(t => t with { Storage = EmbeddingStorage.Int8Rowwise }).ToArray(), shape.SelfInteraction);
        using var model = DlrmModel.Create(config, 11);
        string exported = Path.Combine(dir, $"export-{wrapped}.pt");
        PyTorchStateDict.Export(model, exported, wrapped);
        string scores = Path.Combine(dir, $"export-{wrapped}-scores.json");
        RunPython("score", exported, Path.Combine(dir, "spec.json"), Path.Combine(dir, "inputs.json"), scores);

        var batch = ReadInputs(Path.Combine(dir, "inputs.json"), config);
        double delta = MaxDifference(model.Predict(batch), ReadScores(scores));
        TestContext.Out.WriteLine($"{variant}: engine export ({(wrapped ? "--save-model dict" : "bare state_dict")}) scored by PyTorch, max |Δ score| = {delta:E2}");
        Assert.That(delta, Is.LessThan(Tolerance));
        Assert.That(Directory.GetFiles(dir, "*.tmp-*"), Is.Empty);
    }

    [Test]
    public void AnExpectedArchitectureThatDiffersIsRefusedNamingTheDifference()
    {
        string file = Path.Combine(Written("dense", WithDense), "model.pt");
        var actual = PyTorchStateDict.ReadArchitecture(file);
        var otherTop = new DlrmConfig(4, [8, 4], [16, 1], actual.Tables);
        Assert.That(() => PyTorchStateDict.Import(file, otherTop), Throws.TypeOf<CheckpointException>()
            .With.Message.Contains(file).And.Message.Contains("top MLP is [8, 1], expected [16, 1]"));
        var otherRows = new DlrmConfig(4, [8, 4], [8, 1], actual.Tables.Select((t, i) => i == 1 ? t with { Rows = 34 } : t).ToArray());
        Assert.That(() => PyTorchStateDict.Import(file, otherRows), Throws.TypeOf<CheckpointException>()
            .With.Message.Contains("table 1 ('emb_1') has 33 rows in the file, expected 34"));
        // Names, pooling and storage, which the file does not carry, come from the expected config.
        var named = new DlrmConfig(4, [8, 4], [8, 1], actual.Tables.Select((t, i) => t with { Name = $"c{i}", Storage = EmbeddingStorage.Fp16 }).ToArray());
        using var model = PyTorchStateDict.Import(file, named);
        Assert.That(model.Tables.Select(t => t.Name), Is.EqualTo(new[] { "c0", "c1", "c2" }));
        Assert.That(model.Tables.All(t => t.Storage == EmbeddingStorage.Fp16), Is.True);
    }

    [Test]
    public void ImportAndExportCommandsRoundTripThroughPyTorch()
    {
        string dir = Written("id-only", IdOnly);
        string ckpt = Path.Combine(dir, "ckpt"), exported = Path.Combine(dir, "cli-export.pt"), scores = Path.Combine(dir, "cli-scores.json");
        var import = CliRun.Invoke("import-pytorch", Path.Combine(dir, "model.pt"), "--out", ckpt, "--arch", ":16-8-1");
        Assert.That(import.Code, Is.Zero, import.Output);
        var export = CliRun.Invoke("export-pytorch", "--model", ckpt, "--out", exported);
        Assert.That(export.Code, Is.Zero, export.Output);
        RunPython("score", exported, Path.Combine(dir, "spec.json"), Path.Combine(dir, "inputs.json"), scores);
        // PyTorch scores the re-exported weights exactly as it scored its own.
        double delta = MaxDifference(ReadScores(scores), ReadScores(Path.Combine(dir, "scores.json")));
        TestContext.Out.WriteLine($"import-pytorch → export-pytorch → PyTorch forward: max |Δ score| = {delta:E2}");
        Assert.That(delta, Is.LessThan(Tolerance));

        Assert.That(CliRun.AssertBadInput("import-pytorch", Path.Combine(dir, "model.pt"), "--out", ckpt + "2", "--arch", "4-8-8:16-8-1").Message,
                    Does.Contain("the file's bottom MLP is absent (no dense features), --arch says 4-8-8"));
        Assert.That(CliRun.AssertBadInput("export-pytorch", "--model", ckpt, "--out", exported).Message, Does.Contain("exists"));
        Assert.That(Directory.Exists(ckpt + "2"), Is.False, "nothing written on a refused import");
    }

    [Test]
    public void InconsistentShapesAreNamed()
    {
        var good = new Dictionary<string, long[]>
        {
            ["emb_l.0.weight"] = [10, 4], ["emb_l.1.weight"] = [12, 4],
            ["bot_l.0.weight"] = [8, 3], ["bot_l.0.bias"] = [8], ["bot_l.2.weight"] = [4, 8], ["bot_l.2.bias"] = [4],
            ["top_l.0.weight"] = [6, 7], ["top_l.0.bias"] = [6], ["top_l.2.weight"] = [1, 6], ["top_l.2.bias"] = [1],
        };
        var config = PyTorchStateDict.InferConfig("f.pt", good, null);
        Assert.That((config.DenseFeatures, config.Dim, config.TopInput), Is.EqualTo((3, 4, 7)));

        void Refused(Action<Dictionary<string, long[]>> damage, string message)
        {
            var shapes = new Dictionary<string, long[]>(good);
            damage(shapes);
            Assert.That(() => PyTorchStateDict.InferConfig("f.pt", shapes, null), Throws.TypeOf<CheckpointException>().With.Message.Contains(message));
        }
        Refused(s => s["emb_l.1.weight"] = [12, 5], "'emb_l.1.weight' has dim 5");
        Refused(s => s["bot_l.2.weight"] = [4, 9], "'bot_l.2.weight' takes 9 inputs, 'bot_l.0.weight' outputs 8");
        Refused(s => s["top_l.0.weight"] = [6, 9], "'top_l.0.weight' takes 9 inputs; 2 tables of dim 4 and a bottom MLP give 7");
        Refused(s => s.Remove("top_l.2.bias"), "'top_l.2.bias' is missing");
        Refused(s => s["top_l.1.weight"] = [6, 6], "unexpected key 'top_l.1.weight'");
        Refused(s => s.Remove("emb_l.0.weight"), "no 'emb_l.0.weight'");
    }
}
