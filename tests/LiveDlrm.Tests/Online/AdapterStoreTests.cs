using LiveDlrm.Data;
using LiveDlrm.Online;
using LiveDlrm.Online.Persistence;

namespace LiveDlrm.Tests.Online;

/// <summary>The adapter file on the engine's <see cref="LiveModel"/> alone (no server): a trained model's state
/// restored into a fresh one on the same base exports the same bytes (including rows merged into the base) and scores
/// the same, and damaged or foreign files are refused before anything changes.</summary>
public class AdapterStoreTests
{
    string _root = "";

    [OneTimeSetUp]
    public void Root() => _root = Directory.CreateTempSubdirectory("livedlrm-adapterstore").FullName;

    [OneTimeTearDown]
    public void Cleanup() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    const string BaseA = "base-seed-3", BaseB = "base-seed-4";

    static OnlineTestModel Fresh(int seed = 3) => new(OnlineTestModel.Options(batch: 16, queue: 4096), seed);

    /// <summary>Events over every row of "big" and "mid", so the adapter pools fill and rows merge into the base.</summary>
    static EventBatch Spread(int count, int seed, long firstRequest)
    {
        var random = new Random(seed);
        var batch = new EventBatch(OnlineTestModel.Layout(), count, 2);
        for (int e = 0; e < count; e++)
        {
            int row = batch.AddEvent(0, 0, firstRequest + e);
            var d = batch.DenseRowForWrite(row);
            for (int k = 0; k < d.Length; k++) d[k] = (float)random.NextDouble();
            batch.AddIndex(0, random.Next(400));
            batch.AddIndex(1, random.Next(200));
            batch.AddIndex(2, random.Next(3));
        }
        return batch;
    }

    static void Train(LiveModel live, int rounds)
    {
        live.Start();
        var scores = new float[256];
        for (int round = 0; round < rounds; round++)
        {
            var batch = Spread(256, 10 + round, 1 + round * 256L);
            live.Serve(batch, scores);
            for (int i = 0; i < 256; i++) live.Feedback(1 + round * 256L + i, i % 3 == 0 ? 1f : 0f);
        }
        live.Drain(flush: true);
        live.Stop();
    }

    [Test]
    public void RestoredStateExportsTheSameBytesAndScoresTheSame()
    {
        using var trained = Fresh();
        var merged = AdapterStore.MergedRows.Track(trained.Live);
        Train(trained.Live, 6);
        byte[] export = AdapterStore.Export(trained.Live, BaseA, merged);
        Assert.That(trained.Trainer.SamplesProcessed, Is.EqualTo(6 * 256));
        Assert.That(trained.Adapters.Where(a => a is not null).Sum(a => a!.MergedRows), Is.GreaterThan(0), "the test covers rows merged into the base");

        var store = new AdapterStore(Path.Combine(_root, "store"));
        store.Save(export);
        using var restored = Fresh();
        var restoredMerged = AdapterStore.MergedRows.Track(restored.Live);
        AdapterStore.Restore(restored.Live, BaseA, restoredMerged, store.ReadVerified()!, store.FilePath);
        Assert.That(AdapterStore.Export(restored.Live, BaseA, restoredMerged), Is.EqualTo(export), "bit for bit");
        var probe = Spread(256, 99, 100_000);
        var a = new float[256];
        var b = new float[256];
        trained.Live.Predict(probe, a);
        restored.Live.Predict(probe, b);
        Assert.That(b, Is.EqualTo(a), "the restored model serves what the trained one serves");
    }

    [Test]
    public void DamagedOrForeignFilesAreRefusedBeforeAnythingChanges()
    {
        using var model = Fresh();
        var merged = AdapterStore.MergedRows.Track(model.Live);
        Train(model.Live, 2);
        var store = new AdapterStore(Path.Combine(_root, "damaged"));
        var export = AdapterStore.Export(model.Live, BaseA, merged);
        store.Save(export);
        var bytes = File.ReadAllBytes(store.FilePath);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(store.FilePath, bytes);
        Assert.That(() => store.ReadVerified(), Throws.TypeOf<AdapterStoreException>().With.Message.Contains("checksum"));

        using var foreign = Fresh(seed: 4);
        var foreignMerged = AdapterStore.MergedRows.Track(foreign.Live);
        ulong before = AdapterStore.Fingerprint(AdapterStore.Export(foreign.Live, BaseB, foreignMerged));
        Assert.That(() => AdapterStore.Restore(foreign.Live, BaseB, foreignMerged, export, "x"),
                    Throws.TypeOf<AdapterStoreException>().With.Message.Contains(AdapterStore.DefaultDiscardHint));
        var truncated = export.AsSpan(0, export.Length - 9).ToArray();
        Assert.That(() => AdapterStore.Restore(foreign.Live, BaseA, foreignMerged, truncated, "x"), Throws.TypeOf<AdapterStoreException>());
        Assert.That(AdapterStore.Fingerprint(AdapterStore.Export(foreign.Live, BaseB, foreignMerged)), Is.EqualTo(before), "nothing applied");
    }
}
