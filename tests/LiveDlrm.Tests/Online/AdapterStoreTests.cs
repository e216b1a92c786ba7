using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Online;
using LiveDlrm.Online.Persistence;

namespace LiveDlrm.Tests.Online;

/// <summary>The adapter file on the engine's <see cref="LiveModel"/> alone (no server): a trained model's state
/// restored into a fresh one on the same base exports the same bytes (including rows merged into the base) and scores
/// the same, and damaged or foreign files are refused before anything changes.</summary>
internal class AdapterStoreTests
{
    string _root = "";

    [OneTimeSetUp]
    public void Root() => _root = Directory.CreateTempSubdirectory("livedlrm-adapterstore").FullName;

    [OneTimeTearDown]
    public void Cleanup() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    const string BaseA = "base-seed-3", BaseB = "base-seed-4";

    static OnlineTestModel Fresh(int seed = 3, bool lastLayer = false, bool inPlace = false)
    {
        var options = OnlineTestModel.Options(batch: 16, queue: 4096) with { AdaptLastLayer = lastLayer };
        if (inPlace) options = options with { Adapter = options.Adapter with { InPlaceRows = true, InPlaceOnly = true } };
        return new(options, seed, lastLayer ? OnlineTestModel.DeepConfig() : null);
    }

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

    static void Train(LiveModel live, int rounds, int first = 0)
    {
        live.Start();
        var scores = new float[256];
        for (int round = first; round < first + rounds; round++)
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

    /// <summary>What a restart must not lose: a model restored from the file scores bit for bit as the saved one
    /// (the last-layer update included), trains on from there exactly as the saved one does on the same labels, and
    /// draws the same random B directions (the generator's state is in the file: after MergeAll both adapters hold
    /// the same fresh B). With a row state (rows start from their base row's Adagrad state) the restarted process has
    /// no base trainer to copy it from: it comes from the file, merges' write-backs included.</summary>
    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    [TestCase(false, true, true)]
    public void RestartScoresAndTrainsOnBitForBit(bool lastLayer, bool rowState, bool inPlace = false)
    {
        using var saved = Fresh(lastLayer: lastLayer, inPlace: inPlace);
        if (rowState)
            foreach (var a in saved.Adapters)
                if (a is not null)
                    a.RowState = new RowAccumulators(Enumerable.Range(0, (int)a.Table.Rows).Select(r => 0.01f * (r % 7)).ToArray());
        var merged = AdapterStore.MergedRows.Track(saved.Live);
        Train(saved.Live, 4);
        if (rowState)
            Assert.That(saved.Adapters.Any(a => a is not null && Enumerable.Range(0, (int)a.Table.Rows).Any(r => a.RowState![r] != 0.01f * (r % 7))),
                        "merges wrote row state back, so the file must carry more than the start");
        if (lastLayer) Assert.That(saved.Live.LastLayer!.Current.Version, Is.GreaterThan(0), "the last layer was trained");
        var store = new AdapterStore(Path.Combine(_root, "restart"));
        store.Save(AdapterStore.Export(saved.Live, BaseA, merged));

        if (inPlace) Assert.That(saved.Adapters.Where(a => a is not null).Sum(a => a!.InPlaceRowUpdates), Is.GreaterThan(0), "rows were trained in place");
        using var restarted = Fresh(lastLayer: lastLayer, inPlace: inPlace);
        var restartedMerged = AdapterStore.MergedRows.Track(restarted.Live);
        AdapterStore.Restore(restarted.Live, BaseA, restartedMerged, store.ReadVerified()!, store.FilePath);
        var probe = Spread(256, 99, 100_000);
        float[] Scores(OnlineTestModel m) { var s = new float[256]; m.Live.Predict(probe, s); return s; }
        Assert.That(Scores(restarted), Is.EqualTo(Scores(saved)), "scores after the restart");
        if (rowState) Assert.That(restarted.Adapters.Where(a => a is not null).All(a => a!.RowState is not null), "row state restored");

        for (int round = 4; round < 7; round++)
        {
            Train(saved.Live, 1, first: round);
            Train(restarted.Live, 1, first: round);
            Assert.That(AdapterStore.Export(restarted.Live, BaseA, restartedMerged), Is.EqualTo(AdapterStore.Export(saved.Live, BaseA, merged)), $"state after training on, round {round}");
        }
        Assert.That(AdapterStore.Export(restarted.Live, BaseA, restartedMerged), Is.EqualTo(AdapterStore.Export(saved.Live, BaseA, merged)), "state after training on");
        Assert.That(Scores(restarted), Is.EqualTo(Scores(saved)), "scores after training on");

        foreach (var m in new[] { saved, restarted })
            foreach (var a in m.Adapters) a?.MergeAll();
        Assert.That(AdapterStore.Export(restarted.Live, BaseA, restartedMerged), Is.EqualTo(AdapterStore.Export(saved.Live, BaseA, merged)), "fresh B drawn from the same generator state");
    }

    [Test]
    public void AnOlderFormatIsRefusedWithOneLine()
    {
        using var model = Fresh();
        var export = AdapterStore.Export(model.Live, BaseA, AdapterStore.MergedRows.Track(model.Live));
        BitConverter.TryWriteBytes(export.AsSpan(8, 4), 2);   // the format after the 8-byte magic: 2 had no row state
        Assert.That(() => AdapterStore.Restore(model.Live, BaseA, new AdapterStore.MergedRows(), export, "old.bin"),
                    Throws.TypeOf<AdapterStoreException>().With.Message.EqualTo($"old.bin: adapter file format 2, this engine reads 3; {AdapterStore.DefaultDiscardHint}"));
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
