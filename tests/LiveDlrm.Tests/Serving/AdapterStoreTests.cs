using LiveDlrm.Data;
using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Serving.Node;
using LiveDlrm.Serving.Persistence;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Serving;

/// <summary>The adapter file without a server: a trained node's state restored into a fresh node exports the same
/// bytes (including rows merged into the base), and damaged or foreign files are refused before anything changes.</summary>
public class AdapterStoreTests
{
    string _root = "", _model = "", _other = "";

    [OneTimeSetUp]
    public void Models()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-adapterstore");
        _model = SaveCheckpoint(Path.Combine(_root, "model"), seed: 5);
        _other = SaveCheckpoint(Path.Combine(_root, "other"), seed: 6);
    }

    [OneTimeTearDown]
    public void Cleanup() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    static readonly OnlineTrainerOptions Trainer = new() { BatchSize = 16, QueueCapacity = 4096, MaxBatchWait = TimeSpan.FromMilliseconds(5) };

    static AdapterStore.MergedRows Track(ILiveNode node)
    {
        var merged = new AdapterStore.MergedRows();
        foreach (var a in node.Adapters) if (a is not null) merged.Track(a);
        return merged;
    }

    [Test]
    public void RestoredStateExportsTheSameBytesAndScoresTheSame()
    {
        using var trained = LiveModelNode.Load(_model, Trainer, 4096);
        var merged = Track(trained);
        trained.StartTrainer(null);
        var batch = new EventBatch(trained.Layout, 256);
        var rng = new Random(3);
        var scores = new float[256];
        for (int round = 0; round < 6; round++)
        {
            batch.Clear();
            for (int i = 0; i < 256; i++)
            {
                int row = batch.AddEvent(0, 0, 1 + round * 256 + i);
                for (int d = 0; d < Dense; d++) batch.DenseRowForWrite(row)[d] = (float)rng.NextDouble();
                for (int t = 0; t < Rows.Length; t++) batch.AddIndex(t, rng.NextInt64(Math.Min(Rows[t], 300)));   // a hot set, so the pools fill and merge
            }
            trained.Serve(batch, scores);
            for (int i = 0; i < 256; i++) trained.Feedback(1 + round * 256 + i, i % 3 == 0 ? 1f : 0f);
        }
        trained.Live.Drain(flush: true);
        trained.StopTrainer(hold: true);
        byte[] export = AdapterStore.Export(trained, merged);
        Assert.That(trained.Status.Samples, Is.EqualTo(6 * 256));
        Assert.That(trained.Adapters.Where(a => a is not null).Sum(a => a!.MergedRows), Is.GreaterThan(0), "the test covers rows merged into the base");

        var store = new AdapterStore(Path.Combine(_root, "store"));
        store.Save(export);
        using var restored = LiveModelNode.Load(_model, Trainer, 4096);
        var restoredMerged = Track(restored);
        AdapterStore.Restore(restored, restoredMerged, store.ReadVerified()!, store.FilePath);
        Assert.That(AdapterStore.Export(restored, restoredMerged), Is.EqualTo(export), "bit for bit");
        var a = new float[256];
        var b = new float[256];
        trained.Serve(batch, a);
        restored.Serve(batch, b);
        Assert.That(b, Is.EqualTo(a), "the restored node serves what the trained one serves");
    }

    [Test]
    public void DamagedOrForeignFilesAreRefusedBeforeAnythingChanges()
    {
        using var node = LiveModelNode.Load(_model, Trainer, 64);
        var merged = Track(node);
        var store = new AdapterStore(Path.Combine(_root, "damaged"));
        store.Save(AdapterStore.Export(node, merged));
        var bytes = File.ReadAllBytes(store.FilePath);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(store.FilePath, bytes);
        Assert.That(() => store.ReadVerified(), Throws.TypeOf<AdapterStoreException>().With.Message.Contains("checksum"));

        using var foreign = LiveModelNode.Load(_other, Trainer, 64);
        var export = AdapterStore.Export(node, merged);
        var foreignMerged = Track(foreign);
        ulong before = AdapterStore.Fingerprint(AdapterStore.Export(foreign, foreignMerged));
        Assert.That(() => AdapterStore.Restore(foreign, new AdapterStore.MergedRows(), export, "x"),
                    Throws.TypeOf<AdapterStoreException>().With.Message.Contains("--adapters-reset"));
        var truncated = export.AsSpan(0, export.Length - 9).ToArray();
        Assert.That(() => AdapterStore.Restore(node, new AdapterStore.MergedRows(), truncated, "x"), Throws.TypeOf<AdapterStoreException>());
        Assert.That(AdapterStore.Fingerprint(AdapterStore.Export(foreign, foreignMerged)), Is.EqualTo(before), "nothing applied");
    }
}
