using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Fleet;

/// <summary>Publishers and running replicas against a real nats-server: replicas applying while examples arrive end
/// equal, a runner restarted from its checkpoint catches up, and a broker killed mid-stream costs no example: the
/// spool holds them, publishes resume on reconnect, and nothing is appended twice.</summary>
[NonParallelizable]
internal class FleetRunnerTests
{
    const int Batch = 16;
    string _root = "", _base = "", _fingerprint = "";
    NatsServerProcess _nats = null!;

    [OneTimeSetUp]
    public async Task Setup()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-fleet-run");
        _base = SaveCheckpoint(Path.Combine(_root, "base"), seed: 7);
        _fingerprint = LiveModelNode.BaseFingerprint(_base);
        _nats = await NatsServerProcess.StartAsync();
    }

    [OneTimeTearDown]
    public async Task Teardown()
    {
        if (_nats is not null) await _nats.DisposeAsync();
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }

    static LiveModelNode Load(string path) =>
        LiveModelNode.Load(path, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), ringCapacity: 16);

    FleetReplica Replica(string id) => new(Load(_base), _base, new FleetReplicaOptions { ReplicaId = id, BatchSize = Batch }, Load);

    Task<NatsExampleLog> Log(string stream) =>
        NatsExampleLog.ConnectAsync(_nats.Url, new FleetStreamOptions { Stream = stream, Subject = $"livedlrm.examples.{stream.ToLowerInvariant()}", Timeout = TimeSpan.FromSeconds(2) });

    static Action<string> Lines(List<string> into) => line => { lock (into) into.Add(line); };

    [Test]
    public async Task RunningReplicasEndEqualAndARestartedOneCatchesUp()
    {
        var lines = new List<string>();
        await using var log = await Log("RUN");
        string ckpt = Path.Combine(_root, "run-b");
        using var a = Replica("a");
        await using var runA = new ReplicaRunner(log, a, "RUN", null, null, Lines(lines)) { ReportStatus = true, CheckpointInterval = TimeSpan.FromMilliseconds(100) };
        runA.Start();
        var rng = new Random(21);
        await using (var publisher = new ExamplePublisher(log, 10_000, () => null, Lines(lines)))
        {
            using var b = Replica("b");
            await using (var runB = new ReplicaRunner(log, b, "RUN", ckpt, null, Lines(lines)) { CheckpointInterval = TimeSpan.FromMilliseconds(50) })
            {
                runB.Start();
                for (int i = 0; i < 20 * Batch + 3; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));
                Assert.That(await publisher.FlushAsync(TimeSpan.FromSeconds(30)), Is.True);
                Assert.That(await runB.WaitForAsync(20 * Batch + 3, TimeSpan.FromSeconds(30)), Is.True);
            }   // b stops (final checkpoint at its applied sequence: 3 examples pending, not in it)
            for (int i = 20 * Batch + 3; i < 40 * Batch; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));
            Assert.That(await publisher.FlushAsync(TimeSpan.FromSeconds(30)), Is.True);
        }
        ulong last = (await log.StateAsync(CancellationToken.None)).LastSequence;
        Assert.That(last, Is.EqualTo((ulong)(40 * Batch)));
        Assert.That(await runA.WaitForAsync(last, TimeSpan.FromSeconds(60)), Is.True);

        var checkpoint = FleetCheckpoint.Load(ckpt, "RUN")!;
        Assert.That(checkpoint.AppliedSequence, Is.EqualTo((ulong)(20 * Batch)));
        using var b2 = new FleetReplica(Load(checkpoint.BasePath), checkpoint.BasePath, new FleetReplicaOptions { ReplicaId = "b", BatchSize = Batch }, Load);
        b2.Restore(checkpoint);
        await using var runB2 = new ReplicaRunner(log, b2, "RUN", ckpt, null, Lines(lines)) { ReportStatus = true, CheckpointInterval = TimeSpan.FromMilliseconds(100) };
        runB2.Start();
        Assert.That(await runB2.WaitForAsync(last, TimeSpan.FromSeconds(60)), Is.True);
        var fa = await runA.FingerprintAsync();
        var fb = await runB2.FingerprintAsync();
        Assert.That(fa.Sequence, Is.EqualTo(last));
        Assert.That(fb, Is.EqualTo(fa));
        Assert.That(a.ExamplesApplied, Is.EqualTo(40 * Batch));
        Assert.That(b2.ExamplesApplied, Is.EqualTo(20 * Batch), "the restarted replica trained exactly what its checkpoint lacked");
        Assert.That(runA.Failure ?? runB2.Failure, Is.Null);

        // The status board: both report the same position and fingerprint, and the view says they agree.
        FleetView view = null!;
        for (int i = 0; i < 100; i++)
        {
            view = FleetView.Of(await log.StateAsync(CancellationToken.None), await log.ReadStatusesAsync(CancellationToken.None));
            if (view.Replicas.Count == 2 && view.Replicas.All(r => r.Status.AppliedSequence == last)) break;
            await Task.Delay(50);
        }
        Assert.That(view.Replicas.Select(r => r.Status.Replica), Is.EqualTo(new[] { "a", "b" }));
        Assert.That(view.Replicas.Select(r => r.Status.Fingerprint), Is.All.EqualTo(fa.Fingerprint.ToString("x16")));
        Assert.That(view.Agreement, Does.StartWith("agree"));
        Assert.That(view.Replicas.Select(r => r.LagMessages), Is.All.Zero);
        Assert.That(view.Replicas[0].Status.LagSamples, Is.EqualTo(40 * Batch));
        var tampered = view.Replicas.Select(r => r.Status with { Fingerprint = r.Status.Replica == "b" ? "0000000000000000" : r.Status.Fingerprint }).ToList();
        Assert.That(FleetView.Of(view.Log, tampered).Disagree, Is.True);
    }

    [Test]
    public async Task ABrokerKilledMidStreamLosesNoExampleAndDuplicatesNone()
    {
        var lines = new List<string>();
        await using var log = await Log("OUTAGE");
        var rng = new Random(22);
        using var a = Replica("oa");
        await using var runA = new ReplicaRunner(log, a, "OUTAGE", null, null, Lines(lines));
        runA.Start();
        await using var publisher = new ExamplePublisher(log, 10_000, () => null, Lines(lines));
        for (int i = 0; i < 100; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));
        Assert.That(await publisher.FlushAsync(TimeSpan.FromSeconds(30)), Is.True);

        _nats.Stop();   // SIGKILL: in-flight publishes fail, the replica's read fails
        try
        {
            for (int i = 100; i < 300; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));   // never blocks
            Assert.That(await publisher.FlushAsync(TimeSpan.FromMilliseconds(1500)), Is.False, "nothing can be published while the broker is down");
            Assert.That(publisher.Waiting, Is.GreaterThan(0));
        }
        finally { await _nats.Start(); }   // same store, same port: the client reconnects by itself

        Assert.That(await publisher.FlushAsync(TimeSpan.FromSeconds(60)), Is.True, "the spool drains on reconnect");
        var state = await log.StateAsync(CancellationToken.None);
        Assert.That(state.Messages, Is.EqualTo(300ul), "every example once: none lost, retries deduplicated");
        Assert.That(await runA.WaitForAsync(state.LastSequence, TimeSpan.FromSeconds(60)), Is.True, string.Join("\n", lines));
        Assert.That(a.ExamplesApplied + a.PendingExamples, Is.EqualTo(300));
        Assert.That(publisher.Dropped, Is.Zero);
    }

    [Test]
    public async Task AFullSpoolDropsTheOldestAndCountsThem()
    {
        await using var log = await Log("SPOOL");
        var lines = new List<string>();
        var rng = new Random(23);
        // One example per message: the publisher holds one in hand (a batching publisher would hold up to a batch
        // outside the spool, and how many it gathers while the loop below runs depends on timing).
        await using var publisher = new ExamplePublisher(new UnreachableLog(), 10, () => null, Lines(lines), PublisherBatching.None);
        for (int i = 0; i < 50; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));
        Assert.That(publisher.Dropped, Is.InRange(39, 40), "50 into a spool of 10 (+1 in hand)");
        Assert.That(publisher.Waiting, Is.LessThanOrEqualTo(11));
    }

    static async Task<List<long>> RequestIdsInLogAsync(IExampleLog log, string reader)
    {
        var state = await log.StateAsync(CancellationToken.None);
        var ids = new List<long>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        if (state.LastSequence == 0) return ids;
        await foreach (var e in log.ReadAsync(reader, 1, cts.Token))
        {
            switch (LogRecord.Decode(e.Payload.Span))
            {
                case ExampleBatch b: ids.AddRange(b.Examples.Select(x => x.RequestId)); break;
                case TrainingExample x: ids.Add(x.RequestId); break;
            }
            if (e.Sequence >= state.LastSequence) break;
        }
        return ids;
    }

    [Test]
    public async Task ExamplesSpooledOnDiskSurviveACrashAndReachTheLogOnce()
    {
        await using var log = await Log("DISK");
        string dir = Path.Combine(_root, "disk-spool");
        var lines = new List<string>();
        var rng = new Random(31);
        var examples = Enumerable.Range(0, 40).Select(i => FleetReplicaTests.Example(i, _fingerprint, rng) with { Replica = "p1" }).ToList();
        var batching = new PublisherBatching { MaxExamples = 8, Linger = TimeSpan.FromMilliseconds(50) };
        // First life: the first message reaches the log but its acknowledgement is lost, then the log answers no more,
        // and the node stops without publishing (nothing is written on the way out: what is on disk is what a kill leaves).
        var lostAck = new LostAckLog(log);
        var first = new ExamplePublisher(lostAck, 1000, () => null, Lines(lines), batching, spoolDir: dir);
        foreach (var e in examples) first.Enqueue(e);
        Assert.That(await WaitUntilAsync(() => Task.FromResult(lostAck.Landed == 1 && first.Errors >= 2), 20), Is.True, "one message landed unacknowledged");
        await first.DisposeAsync();
        Assert.That(first.Published, Is.Zero);
        Assert.That(await RequestIdsInLogAsync(log, "check1"), Has.Count.EqualTo(8));

        // Second life: the landed message goes out again under its id (the log drops the copy), then the rest.
        await using (var second = new ExamplePublisher(log, 1000, () => null, Lines(lines), batching, spoolDir: dir))
        {
            Assert.That(second.Recovered, Is.EqualTo(40), string.Join("\n", lines));
            Assert.That(await second.FlushAsync(TimeSpan.FromSeconds(30)), Is.True);
        }
        Assert.That(await RequestIdsInLogAsync(log, "check2"), Is.EqualTo(examples.Select(e => e.RequestId).ToList()), "every example once, in order");

        // Third life: nothing left to publish.
        await using var third = new ExamplePublisher(log, 1000, () => null, Lines(lines), batching, spoolDir: dir);
        Assert.That(third.Recovered, Is.Zero);
    }

    [Test]
    public async Task AFullDiskSpoolDropsTheOldestAndADamagedTailKeepsWhatCameBefore()
    {
        string dir = Path.Combine(_root, "disk-full");
        var lines = new List<string>();
        var rng = new Random(33);
        long dropped;
        await using (var publisher = new ExamplePublisher(new UnreachableLog(), 10, () => null, Lines(lines), PublisherBatching.None, spoolDir: dir))
        {
            for (int i = 0; i < 50; i++) publisher.Enqueue(FleetReplicaTests.Example(i, _fingerprint, rng));
            dropped = publisher.Dropped;
            Assert.That(dropped, Is.InRange(39, 40), "50 into a spool of 10 (+1 in hand)");
        }
        // A record cut by a crash at the end of the file.
        File.AppendAllBytes(Path.Combine(dir, DiskSpool.FileName), [40, 0, 0, 0, 1, 2, 3]);
        await using var again = new ExamplePublisher(new UnreachableLog(), 10, () => null, Lines(lines), PublisherBatching.None, spoolDir: dir);
        Assert.That(again.Recovered, Is.EqualTo(50 - dropped), "exactly what was spooled and not dropped");
        Assert.That(lines.Any(l => l.Contains("damaged record", StringComparison.Ordinal)), Is.True, string.Join("\n", lines));
    }

    [Test]
    public void AFileThatIsNotASpoolIsRefusedAndKept()
    {
        string dir = Path.Combine(_root, "disk-foreign");
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, DiskSpool.FileName);
        byte[] foreign = [.. "someone else's notes\n"u8];
        File.WriteAllBytes(path, foreign);
        var e = Assert.Throws<LiveDlrm.Runtime.UserInputException>(() => DiskSpool.Open(dir));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("not a fleet spool"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(foreign), "left as it was");

        // A spool cut while its magic was being written is ours: it opens empty.
        File.WriteAllBytes(path, [.. "LDSP"u8]);
        var (spool, recovered) = DiskSpool.Open(dir);
        using (spool) Assert.That((recovered.Waiting.Count, recovered.InFlight.Count, recovered.Damaged), Is.EqualTo((0, 0, false)));
    }

    [Test]
    public void TheDiskSpoolStaysSmallWhileMessagesAreAcknowledged()
    {
        string dir = Path.Combine(_root, "disk-compact");
        var rng = new Random(35);
        var (spool, recovered) = DiskSpool.Open(dir, compactBytes: 64 << 10);
        long largest = 0;
        using (spool)
        {
            Assert.That(recovered.Waiting, Is.Empty);
            long index = 0;
            for (int m = 0; m < 300; m++)
            {
                var indices = new List<long>();
                for (int k = 0; k < 10; k++) { spool.Append(index, FleetReplicaTests.Example((int)index, _fingerprint, rng)); indices.Add(index++); }
                spool.Formed(indices);
                spool.Acknowledged();
                largest = Math.Max(largest, spool.FileBytes);
            }
            for (int k = 0; k < 5; k++) spool.Append(index++, FleetReplicaTests.Example((int)index + 1000, _fingerprint, rng));
        }
        Assert.That(largest, Is.LessThan(3 * (64 << 10)), "rewritten when it outgrows the threshold");
        var (reopened, after) = DiskSpool.Open(dir);
        using (reopened)
        {
            Assert.That(after.Waiting.Select(w => w.Index), Is.EqualTo(new long[] { 3000, 3001, 3002, 3003, 3004 }), "only the unacknowledged examples, in order");
            Assert.That(after.InFlight, Is.Empty);
            Assert.That(after.Damaged, Is.False);
        }
    }

    /// <summary>Passes the first publish to the log and then loses its acknowledgement; every later publish fails.</summary>
    sealed class LostAckLog(IExampleLog inner) : IExampleLog
    {
        int _landed;
        public int Landed => Volatile.Read(ref _landed);
        public async Task<PublishAck> PublishAsync(string messageId, ReadOnlyMemory<byte> payload, CancellationToken ct)
        {
            if (Interlocked.Increment(ref _landed) == 1) await inner.PublishAsync(messageId, payload, ct);
            else Interlocked.Decrement(ref _landed);
            throw new IOException("acknowledgement lost");
        }
        public IAsyncEnumerable<LogEntry> ReadAsync(string reader, ulong fromSequence, CancellationToken ct) => inner.ReadAsync(reader, fromSequence, ct);
        public Task<LogState> StateAsync(CancellationToken ct) => inner.StateAsync(ct);
        public Task PublishStatusAsync(FleetStatus status, CancellationToken ct) => inner.PublishStatusAsync(status, ct);
        public Task<IReadOnlyList<FleetStatus>> ReadStatusesAsync(CancellationToken ct) => inner.ReadStatusesAsync(ct);
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    sealed class UnreachableLog : IExampleLog
    {
        public Task<PublishAck> PublishAsync(string messageId, ReadOnlyMemory<byte> payload, CancellationToken ct) => Task.FromException<PublishAck>(new IOException("no broker"));
        public IAsyncEnumerable<LogEntry> ReadAsync(string reader, ulong fromSequence, CancellationToken ct) => throw new IOException("no broker");
        public Task<LogState> StateAsync(CancellationToken ct) => throw new IOException("no broker");
        public Task PublishStatusAsync(FleetStatus status, CancellationToken ct) => throw new IOException("no broker");
        public Task<IReadOnlyList<FleetStatus>> ReadStatusesAsync(CancellationToken ct) => throw new IOException("no broker");
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
