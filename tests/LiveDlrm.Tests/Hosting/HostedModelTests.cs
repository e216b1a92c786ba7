using System.Diagnostics;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Hosting;
using LiveDlrm.Model;

namespace LiveDlrm.Tests.Hosting;

/// <summary>The host API on a small model: scoring both ways, the label join, training, save/restore, reload,
/// bad input, disposal; and that the engine assembly exports exactly the listed public types.</summary>
internal class HostedModelTests
{
    static readonly ModelShape Shape = new(3, [new TableShape("user", 2_000), new TableShape("item", 4_000)], 8, [16, 8], [16, 1]);
    static readonly HostedModelOptions Options = new() { TrainerBatchSize = 64, AdapterBudgetFraction = 0.1, AdapterLearningRate = 0.3f };
    string _dir = null!;
    string _model = null!;

    [OneTimeSetUp]
    public void WriteModel()
    {
        _dir = Directory.CreateTempSubdirectory("hosted-").FullName;
        _model = Path.Combine(_dir, "model");
        HostedModel.WriteInitialCheckpoint(_model, Shape, seed: 3);
    }

    [OneTimeTearDown]
    public void Remove() => Directory.Delete(_dir, recursive: true);

    static void Fill(EventBatch batch, int seed, long firstRequest, float[]? labels = null)
    {
        var random = new Random(seed);
        batch.Clear();
        for (int i = 0; !batch.IsFull; i++)
        {
            long item = random.Next(50) * 31;
            int row = batch.AddEvent(0f, 0, firstRequest + i);
            var dense = batch.DenseRowForWrite(row);
            for (int d = 0; d < dense.Length; d++) dense[d] = (float)random.NextDouble();
            batch.AddIndex(0, random.Next(2_000));
            batch.AddIndex(1, item);
            if (labels is not null) labels[row] = item % 62 == 0 ? 1f : 0f;
        }
    }

    [Test]
    public void SpansScoreAsTheBatchAndLabelsJoinOnce()
    {
        using var model = HostedModel.Load(_model, Options);
        Assert.That(model.Layout.DenseCount, Is.EqualTo(3));
        Assert.That(model.Layout.Sparse.Select(s => (s.Name, s.Rows)), Is.EqualTo(new[] { ("user", 2_000L), ("item", 4_000L) }));
        var batch = model.CreateBatch(32);
        Fill(batch, seed: 1, firstRequest: 100);
        var fromBatch = new float[32];
        model.Score(batch, fromBatch);

        var dense = batch.Dense.ToArray();
        var sparse = new long[32 * 2];
        for (int i = 0; i < 32; i++) { sparse[2 * i] = batch.Bag(0, i)[0]; sparse[2 * i + 1] = batch.Bag(1, i)[0]; }
        var ids = Enumerable.Range(0, 32).Select(i => 1_000L + i).ToArray();
        var fromSpans = new float[32];
        model.Score(ids, dense, sparse, fromSpans);
        Assert.That(fromSpans, Is.EqualTo(fromBatch));
        Assert.That(fromBatch, Has.All.InRange(0f, 1f));

        Assert.That(model.Feedback(100, 1f), Is.True);
        Assert.That(model.Feedback(100, 1f), Is.False, "a request is labelled once");
        Assert.That(model.Feedback(1_031, 0f), Is.True, "span requests are remembered by their ids");
        Assert.That(model.Feedback(99, 0f), Is.False, "never scored");
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Feedback(101, 0.5f));
        var status = model.Status;
        Assert.That((status.Scored, status.LabelsJoined, status.LabelsRefused), Is.EqualTo((64L, 2L, 2L)));

        sparse[1] = 4_000;
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Score(ids, dense, sparse, fromSpans));
        Assert.Throws<ArgumentException>(() => model.Score(ids, dense.AsSpan(1).ToArray(), sparse, fromSpans));
    }

    [Test]
    public void TrainerLearnsAndSavedAdaptersRestoreBitExactly()
    {
        string state = Path.Combine(_dir, "state-" + Guid.NewGuid().ToString("N"));
        using var model = HostedModel.Load(_model, Options);
        var batch = model.CreateBatch(256);
        var labels = new float[256];
        var before = new float[256];
        Fill(batch, seed: 2, firstRequest: 0, labels);
        model.Score(batch, before);
        model.StartTrainer(new TrainerQosOptions { Mode = TrainerQosMode.Off });
        Assert.That(model.TrainerRunning);
        long request = 0;
        for (int round = 0; round < 20; round++)
        {
            Fill(batch, seed: 10 + round, firstRequest: request, labels);
            request += batch.Count;
            model.Score(batch, new float[256]);
            for (int i = 0; i < batch.Count; i++) Assert.That(model.Feedback(batch.RequestIds[i], labels[i]));
        }
        model.WaitForTrainer();
        var status = model.Status;
        Assert.That(status.SamplesTrained, Is.EqualTo(20 * 256));
        Assert.That(status.AdaptedRows, Is.GreaterThan(0));
        Assert.That(status.AdapterBytes, Is.LessThanOrEqualTo(status.AdapterBudgetBytes));

        Fill(batch, seed: 2, firstRequest: 1_000_000, labels);
        var after = new float[256];
        model.Score(batch, after);
        Assert.That(after, Is.Not.EqualTo(before), "the adapters changed the scores");

        string file = model.SaveAdapters(state);
        Assert.That(file, Is.EqualTo(Path.Combine(Path.GetFullPath(state), "adapters.bin")));
        Assert.That(model.TrainerRunning, "saving pauses the trainer and resumes it");
        model.StopTrainer();

        using var restored = HostedModel.Load(_model, Options);
        Assert.That(restored.RestoreAdapters(Path.Combine(_dir, "nothing-here")), Is.False);
        Assert.That(restored.RestoreAdapters(state), Is.True);
        Fill(batch, seed: 2, firstRequest: 2_000_000, labels);
        var saved = new float[256];
        var again = new float[256];
        model.Score(batch, saved);
        restored.Score(batch, again);
        Assert.That(again, Is.EqualTo(saved), "bit for bit");
        Assert.Throws<InvalidOperationException>(() => model.RestoreAdapters(state), "the trained model has merged/learned state of its own");
    }

    [Test]
    public void ADamagedOrForeignAdapterFileChangesNothing()
    {
        string state = Path.Combine(_dir, "damaged-" + Guid.NewGuid().ToString("N"));
        using (var model = HostedModel.Load(_model, Options)) model.SaveAdapters(state);
        string file = Path.Combine(state, "adapters.bin");
        var bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0x5a;
        File.WriteAllBytes(file, bytes);
        using var fresh = HostedModel.Load(_model, Options);
        var e = Assert.Throws<HostedModelException>(() => fresh.RestoreAdapters(state))!;
        Assert.That(e.Message, Does.Contain(file).And.Contain("checksum"));

        string other = Path.Combine(_dir, "other-" + Guid.NewGuid().ToString("N"));
        HostedModel.WriteInitialCheckpoint(other, Shape, seed: 4);
        string otherState = Path.Combine(_dir, "other-state-" + Guid.NewGuid().ToString("N"));
        using (var o = HostedModel.Load(other, Options)) o.SaveAdapters(otherState);
        Assert.That(Assert.Throws<HostedModelException>(() => fresh.RestoreAdapters(otherState))!.Message, Does.Contain("base model"));
    }

    [Test]
    public void APyTorchFileLoadsAsTheSameModel()
    {
        string pt = Path.Combine(_dir, "model-" + Guid.NewGuid().ToString("N") + ".pt");
        using (var baseModel = Checkpoint.Load(_model, ModelCopy.InlineCpuBackend())) PyTorchStateDict.Export(baseModel, pt);
        using var fromCheckpoint = HostedModel.Load(_model, Options);
        using var fromPyTorch = HostedModel.Load(pt, Options);
        Assert.That(fromPyTorch.BaseFingerprint, Does.StartWith("pytorch-xxh3:"));
        Assert.That(fromPyTorch.Layout.Sparse.Select(s => s.Rows), Is.EqualTo(fromCheckpoint.Layout.Sparse.Select(s => s.Rows)));
        var a = fromCheckpoint.CreateBatch(64);
        var b = fromPyTorch.CreateBatch(64);
        Fill(a, 5, 0);
        Fill(b, 5, 0);
        var sa = new float[64];
        var sb = new float[64];
        fromCheckpoint.Score(a, sa);
        fromPyTorch.Score(b, sb);
        Assert.That(sb, Is.EqualTo(sa));
    }

    [Test]
    public void ReloadSwapsTheBaseAndABadReloadKeepsTheModel()
    {
        string other = Path.Combine(_dir, "reload-" + Guid.NewGuid().ToString("N"));
        HostedModel.WriteInitialCheckpoint(other, Shape, seed: 9);
        using var model = HostedModel.Load(_model, Options);
        string first = model.BaseFingerprint;
        var batch = model.CreateBatch(16);
        Fill(batch, 6, 0);
        var before = new float[16];
        model.Score(batch, before);
        model.StartTrainer();

        Assert.Throws<HostedModelException>(() => model.ReloadBase(Path.Combine(_dir, "missing")));
        Assert.That(model.BaseFingerprint, Is.EqualTo(first));
        model.ReloadBase(other);
        Assert.That(model.BaseFingerprint, Is.Not.EqualTo(first));
        Assert.That(model.TrainerRunning, "the trainer restarts on the new base");
        Assert.That(model.Feedback(0, 1f), Is.False, "requests scored by the old base are not joined to the new one");
        var after = new float[16];
        Fill(batch, 6, 100);
        model.Score(batch, after);
        Assert.That(after, Is.Not.EqualTo(before));
    }

    [Test]
    public void BadInputIsOneLineAndDisposedModelsRefuse()
    {
        var missing = Assert.Throws<HostedModelException>(() => HostedModel.Load(Path.Combine(_dir, "missing")))!;
        Assert.That(missing.Message, Does.Contain("no such checkpoint directory or PyTorch file").And.Not.Contain("\n"));
        string empty = Directory.CreateDirectory(Path.Combine(_dir, "empty-" + Guid.NewGuid().ToString("N"))).FullName;
        Assert.That(Assert.Throws<HostedModelException>(() => HostedModel.Load(empty))!.Message, Does.Contain("not a LiveDlrm checkpoint"));
        string garbage = Path.Combine(_dir, "garbage.pt");
        File.WriteAllText(garbage, "not a zip");
        Assert.That(Assert.Throws<HostedModelException>(() => HostedModel.Load(garbage))!.Message, Does.StartWith(garbage));
        Assert.Throws<ArgumentOutOfRangeException>(() => HostedModel.Load(_model, new HostedModelOptions { AdapterBudgetFraction = 0 }));
        Assert.Throws<ArgumentException>(() => HostedModel.WriteInitialCheckpoint(Path.Combine(_dir, "bad-shape"), Shape with { EmbeddingDim = 4 }, 1));

        var model = HostedModel.Load(_model, Options);
        var batch = model.CreateBatch(4);
        Fill(batch, 7, 0);
        model.StartTrainer();
        model.Dispose();
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Score(batch, new float[4]));
        Assert.Throws<ObjectDisposedException>(() => model.Feedback(0, 1f));
    }

    /// <summary>The engine exports exactly build/engine-public-types.txt, and the sweep leaves nothing to do
    /// (a new public type anywhere in the repository's projects means build/engine-visibility.py was not re-run).</summary>
    [Test]
    public void TheEngineExportsOnlyTheListedTypes()
    {
        string root = FindRepoRoot();
        var listed = File.ReadAllLines(Path.Combine(root, "build", "engine-public-types.txt"))
            .Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).Order().ToList();
        var exported = typeof(HostedModel).Assembly.GetExportedTypes().Where(t => !t.IsNested).Select(t => t.FullName!).Order().ToList();
        Assert.That(exported, Is.EqualTo(listed));
        Assert.That(typeof(Interop.NativeLibraries).Assembly.GetExportedTypes(), Is.Empty);

        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        psi.ArgumentList.Add(Path.Combine(root, "build", "engine-visibility.py"));
        psi.ArgumentList.Add("--check");
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, output);
    }

    static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LiveDlrm.slnx"))) return d.FullName;
        throw new InvalidOperationException("repository root (LiveDlrm.slnx) not found above " + AppContext.BaseDirectory);
    }
}
