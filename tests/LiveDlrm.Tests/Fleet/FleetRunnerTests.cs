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
