using System.IO.Hashing;
using System.Text;
using LiveDlrm.Checkpoints;
using LiveDlrm.Embeddings;
using LiveDlrm.Memory;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Model;

namespace LiveDlrm.Tests.Checkpoints;

internal class CheckpointTests
{
    string _root = "";

    [OneTimeSetUp]
    public void Init() => TorchRuntime.EnsureInitialised();

    [SetUp]
    public void CreateRoot() => Directory.CreateDirectory(_root = Path.Combine(Path.GetTempPath(), $"livedlrm-ckpt-{Guid.NewGuid():N}"));

    [TearDown]
    public void DeleteRoot() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    static DlrmConfig MixedConfig() => new(4, [8, 4], [8, 1],
        [new DlrmTableConfig("fp32", 50, 4, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("fp16", 33, 4, PoolingMode.Mean, EmbeddingStorage.Fp16),
         new DlrmTableConfig("int8", 17, 4, PoolingMode.Sum, EmbeddingStorage.Int8Rowwise)]);

    string SaveMixed(out DlrmModel model)
    {
        model = DlrmModel.Create(MixedConfig(), 42);
        string dir = Path.Combine(_root, "ckpt");
        Checkpoint.Save(model, dir, new Dictionary<string, string> { ["events"] = "123" });
        return dir;
    }

    [Test]
    public void RoundTripIsBitExact()
    {
        string dir = SaveMixed(out var original);
        using (original)
        using (var loaded = Checkpoint.Load(dir))
        {
            Assert.That(loaded.Config.SameShape(original.Config), Is.True);
            for (int t = 0; t < original.Tables.Count; t++)
                for (long r = 0; r < original.Tables[t].Rows; r++)
                    Assert.That(loaded.Tables[t].StoredRow(r).SequenceEqual(original.Tables[t].StoredRow(r)), Is.True, $"table {t} row {r}");
            var a = original.Dense.NamedParameters();
            var b = loaded.Dense.NamedParameters();
            for (int i = 0; i < a.Count; i++)
                Assert.That(b[i].Parameter.data<float>().ToArray(), Is.EqualTo(a[i].Parameter.data<float>().ToArray()), a[i].Name);
            var batch = TinyDlrm.RandomBatch(original.Config, 50, 9);
            Assert.That(loaded.Predict(batch), Is.EqualTo(original.Predict(batch)));
            Assert.That(Checkpoint.ReadManifest(dir).Metadata["events"], Is.EqualTo("123"));
        }
        Assert.That(Directory.GetFileSystemEntries(_root), Is.EqualTo(new[] { dir }), "no temporary directories left behind");
    }

    [Test]
    public void SavingOverAnExistingCheckpointReplacesIt()
    {
        string dir = SaveMixed(out var first);
        first.Dispose();
        using var second = DlrmModel.Create(MixedConfig(), 7);
        Checkpoint.Save(second, dir);
        using var loaded = Checkpoint.Load(dir);
        var batch = TinyDlrm.RandomBatch(second.Config, 10, 1);
        Assert.That(loaded.Predict(batch), Is.EqualTo(second.Predict(batch)));
        Assert.That(Directory.GetFileSystemEntries(_root), Has.Length.EqualTo(1));
    }

    public enum Damage { TruncatedTable, FlippedTableByte, FlippedDenseByte, MissingTable, MissingDense, ManifestConfigMismatch, WrongVersion, FlippedManifestByte, TableFileOfOtherSize }

    [TestCase(Damage.TruncatedTable, "tables/001-fp16.bin", "truncated")]
    [TestCase(Damage.FlippedTableByte, "tables/002-int8.bin", "checksum mismatch")]
    [TestCase(Damage.FlippedDenseByte, "dense.bin", "checksum mismatch")]
    [TestCase(Damage.MissingTable, "tables/000-fp32.bin", "missing")]
    [TestCase(Damage.MissingDense, "dense.bin", "missing")]
    [TestCase(Damage.ManifestConfigMismatch, "manifest.json", "tables[0] sizes do not match")]
    [TestCase(Damage.WrongVersion, "manifest.json", "version 2 is not supported")]
    [TestCase(Damage.FlippedManifestByte, "manifest.json", "checksum mismatch")]
    [TestCase(Damage.TableFileOfOtherSize, "tables/000-fp32.bin", "does not match the model config")]
    public void DamagedCheckpointIsRejectedNamingTheFile(Damage damage, string file, string reason)
    {
        string dir = SaveMixed(out var model);
        model.Dispose();
        string path = Path.Combine(dir, file);
        switch (damage)
        {
            case Damage.TruncatedTable:
                using (var s = new FileStream(path, FileMode.Open)) s.SetLength(s.Length - 3);
                break;
            case Damage.FlippedTableByte:
            case Damage.FlippedDenseByte:
            case Damage.FlippedManifestByte:
                var bytes = File.ReadAllBytes(path);
                bytes[bytes.Length / 2] ^= 0x10;
                File.WriteAllBytes(path, bytes);
                break;
            case Damage.MissingTable:
            case Damage.MissingDense:
                File.Delete(path);
                break;
            case Damage.ManifestConfigMismatch:
                RewriteManifest(dir, m => m.Replace("\"rows\": 50", "\"rows\": 60"));
                break;
            case Damage.WrongVersion:
                RewriteManifest(dir, m => m.Replace("\"version\": 1", "\"version\": 2"));
                break;
            case Damage.TableFileOfOtherSize:
                File.AppendAllText(path, "extra");
                break;
        }
        long liveBefore = NativeBuffer.LiveBytes;
        var e = Assert.Throws<CheckpointException>(() => Checkpoint.Load(dir))!;
        Assert.That(e.FilePath, Is.EqualTo(Path.GetFullPath(path)));
        Assert.That(e.Message, Does.Contain(Path.GetFullPath(path)).And.Contain(reason));
        GC.Collect(); GC.WaitForPendingFinalizers();
        Assert.That(NativeBuffer.LiveBytes, Is.EqualTo(liveBefore), "a failed load must free what it loaded");
    }

    /// <summary>Edits the manifest and re-signs it, as a consistent but wrong checkpoint would look.</summary>
    static void RewriteManifest(string dir, Func<string, string> edit)
    {
        string manifestPath = Path.Combine(dir, Checkpoint.ManifestFile);
        string text = File.ReadAllText(manifestPath);
        string edited = edit(text);
        Assert.That(edited, Is.Not.EqualTo(text), "the edit must change the manifest");
        var bytes = Encoding.UTF8.GetBytes(edited);
        File.WriteAllBytes(manifestPath, bytes);
        File.WriteAllText(Path.Combine(dir, Checkpoint.ManifestChecksumFile), XxHash3.HashToUInt64(bytes).ToString("x16") + "\n");
    }

    [Test]
    public void MissingDirectoryIsNamed()
    {
        string dir = Path.Combine(_root, "nope");
        Assert.That(() => Checkpoint.Load(dir), Throws.TypeOf<CheckpointException>().With.Message.Contains(dir));
    }

    [Test]
    public void PyTorchStateDictRoundTripsThroughPyBridge()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 77);
        string file = Path.Combine(_root, "dlrm.pt");
        PyTorchStateDict.Export(model, file);
        using var imported = PyTorchStateDict.Import(file, config);
        var batch = TinyDlrm.RandomBatch(config, 40, 4);
        Assert.That(imported.Predict(batch), Is.EqualTo(model.Predict(batch)));
        for (int t = 0; t < config.Tables.Count; t++)
            for (long r = 0; r < config.Tables[t].Rows; r++)
                Assert.That(imported.Tables[t].StoredRow(r).SequenceEqual(model.Tables[t].StoredRow(r)), Is.True);
    }

    [Test]
    public void StateDictKeysAreThoseOfFacebookDlrm()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 77);
        string file = Path.Combine(_root, "dlrm.pt");
        PyTorchStateDict.Export(model, file);
        // PyTorch's zip format: data.pkl holds the keys as pickled strings.
        using var zip = System.IO.Compression.ZipFile.OpenRead(file);
        var pickle = zip.Entries.Single(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
        using var reader = new StreamReader(pickle.Open(), Encoding.Latin1);
        string text = reader.ReadToEnd();
        foreach (string key in new[] { "emb_l.0.weight", "emb_l.2.weight", "bot_l.0.weight", "bot_l.2.bias", "top_l.0.weight", "top_l.2.bias" })
            Assert.That(text, Does.Contain(key));
        Assert.That(text, Does.Not.Contain("bot_l.1."));
    }

    [Test]
    public void StateDictOfAnotherShapeIsRejectedNamingTheFile()
    {
        using var model = DlrmModel.Create(TinyDlrm.SmallConfig(), 1);
        string file = Path.Combine(_root, "dlrm.pt");
        PyTorchStateDict.Export(model, file);
        var other = new DlrmConfig(4, [8, 4], [16, 1], TinyDlrm.SmallConfig().Tables);
        Assert.That(() => PyTorchStateDict.Import(file, other), Throws.TypeOf<CheckpointException>().With.Message.Contains(file));
    }
}
