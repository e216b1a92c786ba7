using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Files;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Files;

internal class OutputSafetyTests
{
    string _root = "";

    [SetUp]
    public void CreateRoot() => _root = Directory.CreateTempSubdirectory("livedlrm-out-").FullName;

    [TearDown]
    public void DeleteRoot() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    string P(string name) => Path.Combine(_root, name);

    string Data()
    {
        SyntheticStreamFiles.Write(P("data.tsv"), new SyntheticStreamConfig { Users = 30, InitialItems = 10, MaxNewItems = 5 }, 200);
        return P("data.tsv");
    }

    void SaveCheckpoint(string dir)
    {
        TorchRuntime.EnsureInitialised();
        var config = new DlrmConfig(2, [4, 4], [4, 1], [new DlrmTableConfig("t", 8, 4, PoolingMode.Sum, EmbeddingStorage.Fp32)]);
        using var model = DlrmModel.Create(config, 1);
        Checkpoint.Save(model, dir);
    }

    [Test]
    public void AnOutputFileThatIsAnInputIsRefusedByIdentity()
    {
        string data = Data();
        File.CreateSymbolicLink(P("soft.json"), data);
        Assert.That(() => OutputTarget.CheckFile("--json", data, [data]), Throws.TypeOf<OutputException>().With.Message.Contains("input"));
        Assert.That(() => OutputTarget.CheckFile("--json", P("soft.json"), [data]), Throws.TypeOf<OutputException>().With.Message.Contains("input"));
        Assert.That(() => OutputTarget.CheckFile("--json", P("./x/../data.tsv"), [data]), Throws.TypeOf<OutputException>());
        Assert.That(OutputTarget.CheckFile("--json", P("r.json"), [data]), Is.EqualTo(P("r.json")));
    }

    [Test]
    public void AnOutputFileMustHaveAWritableFolderAndNotBeADirectoryOrInACheckpoint()
    {
        Directory.CreateDirectory(P("dir"));
        SaveCheckpoint(P("ckpt"));
        Assert.That(() => OutputTarget.CheckFile("--json", P("dir")), Throws.TypeOf<OutputException>().With.Message.Contains("directory"));
        Assert.That(() => OutputTarget.CheckFile("--json", P("nope/r.json")), Throws.TypeOf<OutputException>().With.Message.Contains("does not exist"));
        Assert.That(() => OutputTarget.CheckFile("--json", P("ckpt/manifest.json")), Throws.TypeOf<OutputException>().With.Message.Contains("checkpoint"));
        Assert.That(() => OutputTarget.CheckFile("--json", "/dev/zero"), Throws.TypeOf<OutputException>().With.Message.Contains("regular"));
    }

    [Test]
    public void ACheckpointReplacesOnlyACheckpointOrAnEmptyDirectory()
    {
        SaveCheckpoint(P("ckpt"));
        Directory.CreateDirectory(P("empty"));
        Directory.CreateDirectory(P("notes"));
        File.WriteAllText(P("notes/todo.txt"), "x");
        Assert.That(CheckpointTarget.Check("--out", P("ckpt")), Is.EqualTo(P("ckpt")));
        Assert.That(CheckpointTarget.Check("--out", P("empty")), Is.EqualTo(P("empty")));
        Assert.That(CheckpointTarget.Check("--out", P("new")), Is.EqualTo(P("new")));
        Assert.That(() => CheckpointTarget.Check("--out", P("notes")), Throws.TypeOf<OutputException>().With.Message.Contains("todo.txt"));
        Assert.That(CheckpointTarget.Check("--out", P("notes"), force: true), Is.EqualTo(P("notes")));
        File.WriteAllText(P("ckpt/mine.txt"), "x");
        Assert.That(() => CheckpointTarget.Check("--out", P("ckpt")), Throws.TypeOf<OutputException>().With.Message.Contains("mine.txt"));
    }

    [Test]
    public void ACheckpointNeverReplacesTheCurrentDirectoryOrAFolderHoldingAnInput()
    {
        string data = Data();
        Assert.That(() => CheckpointTarget.Check("--out", _root, [data], force: true), Throws.TypeOf<OutputException>().With.Message.Contains("input"));
        Assert.That(() => CheckpointTarget.Check("--out", Directory.GetCurrentDirectory(), force: true), Throws.TypeOf<OutputException>().With.Message.Contains("current directory"));
        Assert.That(() => CheckpointTarget.Check("--out", "/", force: true), Throws.TypeOf<OutputException>());
        Assert.That(() => CheckpointTarget.Check("--out", data), Throws.TypeOf<OutputException>());
    }

    [Test]
    public void ASymlinkedCheckpointIsWrittenThroughAndStaysALink()
    {
        SaveCheckpoint(P("real"));
        File.CreateSymbolicLink(P("link"), "real");
        Assert.That(CheckpointTarget.Check("--out", P("link")), Is.EqualTo(P("real")));
        SaveCheckpoint(P("link"));
        Assert.That(new FileInfo(P("link")).LinkTarget, Is.EqualTo("real"));
        Assert.That(File.Exists(P("real/manifest.json")));
    }

    [Test]
    public void TrainingOnNoValidEventsIsAnError()
    {
        TorchRuntime.EnsureInitialised();
        string data = Data();
        File.WriteAllText(P("empty.tsv"), "");
        var schema = StreamSchema.Load(SyntheticStreamFiles.SchemaPathFor(data));
        using var source = new TsvEventSource(P("empty.tsv"), schema);
        using var model = DlrmModel.Create(TrainingLoop.DefaultConfig(schema.Layout), 1);
        using var trainer = new DlrmTrainer(model, new DlrmTrainerOptions());
        Assert.That(() => TrainingLoop.Train(trainer, source, 16), Throws.TypeOf<NoResultException>().With.Message.Contains("no valid events"));
        Assert.That(() => TrainingLoop.Evaluate(model, source, 16, out _), Throws.TypeOf<NoResultException>());
    }

    [Test]
    public void TablesLargerThanMemoryAreRefusedBeforeAllocating()
    {
        var config = new DlrmConfig(2, [4, 4], [4, 1], [new DlrmTableConfig("huge", 1L << 50, 4, PoolingMode.Sum, EmbeddingStorage.Fp32)]);
        Assert.That(() => config.CheckMemory(), Throws.TypeOf<ResourceLimitException>().With.Message.Contains("'huge'"));
        Assert.That(() => new DlrmConfig(2, [4, 4], [4, 1], [new DlrmTableConfig("t", long.MaxValue / 4, 4, PoolingMode.Sum, EmbeddingStorage.Fp32)]),
                    Throws.TypeOf<DlrmConfigException>().With.Message.Contains("tables[0].rows"));
    }

    [Test]
    public void SaturatingSumsClampInsteadOfWrapping()
    {
        Assert.That(SaturatingMath.Add(long.MaxValue - 5, 60), Is.EqualTo(long.MaxValue));
        Assert.That(SaturatingMath.Add(1_700_000_000, long.MaxValue), Is.EqualTo(long.MaxValue));
        Assert.That(SaturatingMath.Add(long.MinValue + 1, -5), Is.EqualTo(long.MinValue));
        Assert.That(SaturatingMath.Add(10, -3), Is.EqualTo(7));
        Assert.That(SaturatingMath.Multiply(1L << 40, 1L << 40), Is.EqualTo(long.MaxValue));
    }
}
