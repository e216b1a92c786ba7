using LiveDlrm.Checkpoints;
using LiveDlrm.Embeddings;
using LiveDlrm.Files;
using LiveDlrm.Model;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Checkpoints;

/// <summary>
/// Fault injection around <see cref="Checkpoint.Save(DlrmModel, string, IReadOnlyDictionary{string, string}?, bool)"/>:
/// a crash (this step and every later one fail, like kill -9: no cleanup runs), ENOSPC, EIO or EXDEV (this one step fails,
/// cleanup runs) before each filesystem step of a save, with and without the one-step exchange. After each, the path
/// must load as the complete old or the complete new checkpoint (after recovery for a crash), and nothing is left over.
/// </summary>
internal class CheckpointFaultTests
{
    string _root = "";

    [OneTimeSetUp]
    public void Init() => TorchRuntime.EnsureInitialised();

    [SetUp]
    public void CreateRoot() => Directory.CreateDirectory(_root = Path.Combine(Path.GetTempPath(), $"livedlrm-fault-{Guid.NewGuid():N}"));

    [TearDown]
    public void DeleteRoot() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    static readonly DlrmConfig Config = new(2, [4, 4], [4, 1],
        [new DlrmTableConfig("a", 16, 4, PoolingMode.Sum, EmbeddingStorage.Fp32), new DlrmTableConfig("b", 8, 4, PoolingMode.Sum, EmbeddingStorage.Fp16)]);

    public enum Fault { Crash, NoSpace, IoError, CrossDevice }

    sealed class FaultyFileSystem(int failAt, Fault fault, bool exchange) : CheckpointFileSystem
    {
        int _step;
        bool _dead;
        public int Steps => _step;
        public List<string> Log { get; } = new();

        void Step(string what)
        {
            int n = _step++;
            Log.Add($"{n} {what}");
            if (_dead) throw new IOException("process is dead");
            if (n != failAt) return;
            if (fault == Fault.Crash) { _dead = true; throw new IOException("killed"); }
            var (message, errno) = fault switch
            {
                Fault.NoSpace => ("No space left on device", 28),
                Fault.CrossDevice => ("Invalid cross-device link", 18),
                _ => ("Input/output error", 5),
            };
            throw new IOException(message, errno);
        }

        public override void CreateDirectory(string path) { Step("mkdir"); base.CreateDirectory(path); }
        public override Stream CreateFile(string path) { Step("create " + Path.GetFileName(path)); return new FaultyStream(base.CreateFile(path), this); }
        public override void SyncFile(Stream stream) { Step("fsync"); base.SyncFile(((FaultyStream)stream).Inner); }
        public override void SyncDirectory(string path) { Step("fsync dir"); base.SyncDirectory(path); }
        public override void Move(string from, string to) { Step("rename"); base.Move(from, to); }
        public override bool TryExchange(string a, string b) { Step("exchange"); return exchange && base.TryExchange(a, b); }
        public override void DeleteDirectory(string path) { Step("rm -r"); base.DeleteDirectory(path); }

        sealed class FaultyStream(Stream inner, FaultyFileSystem fs) : Stream
        {
            public Stream Inner => inner;
            public override void Write(ReadOnlySpan<byte> buffer) { fs.Step("write"); inner.Write(buffer); }
            public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
            public override void Flush() => inner.Flush();
            protected override void Dispose(bool disposing) { if (disposing) inner.Dispose(); base.Dispose(disposing); }
            public override bool CanRead => false;
            public override bool CanSeek => false;
            public override bool CanWrite => true;
            public override long Length => inner.Length;
            public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
            public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
            public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
            public override void SetLength(long value) => throw new NotSupportedException();
        }
    }

    static float FirstWeight(DlrmModel m)
    {
        Span<float> row = stackalloc float[4];
        m.Tables[0].ReadRow(0, row);
        return row[0];
    }

    static int CountSteps(bool exchange, bool existing, string root)
    {
        string dir = Path.Combine(root, "count");
        using var model = DlrmModel.Create(Config, 1);
        if (existing) Checkpoint.Save(model, dir);
        var fs = new FaultyFileSystem(-1, Fault.Crash, exchange);
        Checkpoint.Save(model, dir, null, false, fs);
        Directory.Delete(dir, true);
        return fs.Steps;
    }

    [Test]
    public void EveryStepOfAReplaceLeavesALoadableCheckpoint([Values] Fault fault, [Values] bool exchange)
    {
        int steps = CountSteps(exchange, existing: true, _root);
        Assert.That(steps, Is.GreaterThan(10), "the save should have a dozen filesystem steps");
        using var oldModel = DlrmModel.Create(Config, 1);
        using var newModel = DlrmModel.Create(Config, 2);
        float oldWeight = FirstWeight(oldModel), newWeight = FirstWeight(newModel);
        Assert.That(oldWeight, Is.Not.EqualTo(newWeight));
        int sawOld = 0, sawNew = 0;
        for (int k = 0; k < steps; k++)
        {
            string dir = Path.Combine(_root, $"ckpt{k}");
            Checkpoint.Save(oldModel, dir);
            var fs = new FaultyFileSystem(k, fault, exchange);
            bool failed = false;
            try { Checkpoint.Save(newModel, dir, null, false, fs); }
            catch (IOException) { failed = true; }
            Assert.That(failed, Is.True, $"step {k} ({fs.Log[k]}) should have failed the save");
            if (fault != Fault.Crash)
                Assert.That(Leftovers(dir), Is.Empty, $"{fault} at step {k} ({fs.Log[k]}): the failed save must clean up");
            // The next process: leftovers of the "dead" writer are resolved, then the checkpoint loads.
            var notes = CheckpointRecovery.Recover(dir, CheckpointFileSystem.Real, (_, _) => false, null);
            using var loaded = Checkpoint.Load(dir);
            float w = FirstWeight(loaded);
            Assert.That(w, Is.EqualTo(oldWeight).Or.EqualTo(newWeight), $"step {k} ({fs.Log[k]}): neither the old nor the new checkpoint");
            if (w == oldWeight) sawOld++; else sawNew++;
            Assert.That(Leftovers(dir), Is.Empty, $"step {k} ({fs.Log[k]}): leftovers after recovery ({string.Join("; ", notes)})");
        }
        Assert.That(sawOld, Is.GreaterThan(0));
        if (fault == Fault.Crash) Assert.That(sawNew, Is.GreaterThan(0), "a crash after the swap keeps the new checkpoint");
    }

    [Test]
    public void ACrashOfAFirstSaveLeavesNothingOrTheCompleteCheckpoint([Values] bool exchange)
    {
        int steps = CountSteps(exchange, existing: false, _root);
        using var model = DlrmModel.Create(Config, 2);
        for (int k = 0; k < steps; k++)
        {
            string dir = Path.Combine(_root, $"first{k}");
            var fs = new FaultyFileSystem(k, Fault.Crash, exchange);
            try { Checkpoint.Save(model, dir, null, false, fs); } catch (IOException) { }
            CheckpointRecovery.Recover(dir, CheckpointFileSystem.Real, (_, _) => false, null);
            if (Directory.Exists(dir))
                using (var loaded = Checkpoint.Load(dir)) Assert.That(FirstWeight(loaded), Is.EqualTo(FirstWeight(model)), $"step {k}");
        }
    }

    [Test]
    public void LoadRollsForwardFromADeadWritersTemporaryAndSaysSo()
    {
        string dir = Path.Combine(_root, "model");
        using var model = DlrmModel.Create(Config, 3);
        Checkpoint.Save(model, dir);
        // The state between the two renames of a save by a process that no longer exists (pid 2^22 + 1 is above
        // Linux's pid_max): the old checkpoint aside, the complete new one still under its temporary name.
        string temp = Path.Combine(_root, ".model.tmp-4194305-1-deadbeef");
        Directory.Move(dir, temp);
        var log = new List<string>();
        using var loaded = Checkpoint.Load(dir, logger: new ListLogger(log));
        Assert.That(FirstWeight(loaded), Is.EqualTo(FirstWeight(model)));
        Assert.That(log, Has.One.Contains("recovered the new checkpoint"));
        Assert.That(Directory.Exists(temp), Is.False);
    }

    [Test]
    public void ALiveWritersTemporaryIsNeverTouched()
    {
        string dir = Path.Combine(_root, "model");
        using var model = DlrmModel.Create(Config, 3);
        Checkpoint.Save(model, dir);
        string temp = Path.Combine(_root, TempOwner.Name("model", "tmp"));
        Directory.CreateDirectory(temp);
        using (Checkpoint.Load(dir)) { }
        Assert.That(Directory.Exists(temp), Is.True, "a temporary of this (live) process must stay");
        string stale = Path.Combine(_root, ".model.tmp-4194305-1-deadbeef");
        Directory.CreateDirectory(stale);
        using (Checkpoint.Load(dir)) { }
        Assert.That(Directory.Exists(stale), Is.False, "a dead process's temporary is removed");
    }

    [Test]
    public void SaveRefusesADirectoryThatIsNotACheckpoint()
    {
        string dir = Path.Combine(_root, "notes");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "todo.txt"), "keep me");
        using var model = DlrmModel.Create(Config, 1);
        var e = Assert.Throws<CheckpointException>(() => Checkpoint.Save(model, dir))!;
        Assert.That(e.Message, Does.Contain("todo.txt"));
        Assert.That(File.ReadAllText(Path.Combine(dir, "todo.txt")), Is.EqualTo("keep me"));
    }

    static string[] Leftovers(string dir) =>
        Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!, $".{Path.GetFileName(dir)}.*");
}
