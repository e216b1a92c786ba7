using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Fleet;

/// <summary>Replicas fed through a real JetStream log (nats-server started here): equal adapters bit for bit, a
/// restart from a checkpoint equal to never stopping, duplicates not trained twice, a base marker switching every
/// replica at the same position.</summary>
[NonParallelizable]
internal class FleetReplicaTests
{
    const int Batch = 16;
    string _root = "", _base = "", _nextBase = "";
    NatsServerProcess _nats = null!;
    string _fingerprint = "", _nextFingerprint = "";

    [OneTimeSetUp]
    public async Task Setup()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-fleet");
        _base = SaveCheckpoint(Path.Combine(_root, "base"), seed: 5);
        _nextBase = SaveCheckpoint(Path.Combine(_root, "base2"), seed: 6);
        _fingerprint = LiveModelNode.BaseFingerprint(_base);
        _nextFingerprint = LiveModelNode.BaseFingerprint(_nextBase);
        _nats = await NatsServerProcess.StartAsync();
    }

    [OneTimeTearDown]
    public async Task Teardown()
    {
        if (_nats is not null) await _nats.DisposeAsync();
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }

    static readonly FleetReplicaOptions Options = new() { BatchSize = Batch };

    static LiveModelNode Load(string path) =>
        LiveModelNode.Load(path, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), ringCapacity: 16);

    FleetReplica Replica(string id) => new(Load(_base), _base, Options with { ReplicaId = id }, Load);

    async Task<NatsExampleLog> Log(string stream) =>
        await NatsExampleLog.ConnectAsync(_nats.Url, new FleetStreamOptions { Stream = stream, Subject = $"livedlrm.examples.{stream.ToLowerInvariant()}", FetchBatch = 128 });

    /// <summary>Examples on a hot id set (pools fill, rows merge into the base), from several producing replicas.</summary>
    internal static TrainingExample Example(int i, string fingerprint, Random rng)
    {
        var dense = new float[Dense];
        for (int d = 0; d < Dense; d++) dense[d] = (float)rng.NextDouble();
        var bags = new long[Rows.Length][];
        for (int t = 0; t < Rows.Length; t++)
            bags[t] = Enumerable.Range(0, 1 + rng.Next(3)).Select(_ => rng.NextInt64(Math.Min(Rows[t], 400))).ToArray();
        return new TrainingExample(1000 + i, 1_700_000_000 + i, rng.Next(3) == 0 ? 1f : 0f, fingerprint, $"r{i % 3 + 1}", dense, bags);
    }

    static async Task<ulong> PublishAsync(IExampleLog log, IEnumerable<LogRecord> records)
    {
        ulong last = 0;
        foreach (var r in records)
        {
            string id = r is TrainingExample e ? $"{e.Replica}-{e.RequestId}" : $"marker-{((BaseMarker)r).BaseFingerprint}";
            last = (await log.PublishAsync(id, LogRecord.Encode(r), CancellationToken.None)).Sequence;
        }
        return last;
    }

    /// <summary>Reads the log from the replica's position through <paramref name="until"/> and applies it, on this
    /// thread (one FP order), bounded in time.</summary>
    static async Task ApplyThrough(IExampleLog log, FleetReplica replica, ulong until)
    {
        var entries = new List<LogEntry>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        if (replica.LastSeen < until)
            await foreach (var e in log.ReadAsync(replica.Options.ReplicaId, replica.LastSeen + 1, cts.Token))
            {
                entries.Add(e);
                if (e.Sequence >= until) break;
            }
        foreach (var e in entries) replica.Apply(e);
        Assert.That(replica.LastSeen, Is.EqualTo(until));
    }

    [Test]
    public async Task ReplicasFedTheSameLogHoldBitIdenticalAdapters()
    {
        await using var log = await Log("IDENTICAL");
        var rng = new Random(11);
        ulong last = await PublishAsync(log, Enumerable.Range(0, 40 * Batch + 5).Select(i => Example(i, _fingerprint, rng)));

        using var a = Replica("a");
        using var b = Replica("b");
        using var c = Replica("c");
        ulong untrained = a.Fingerprint();
        await ApplyThrough(log, a, last);
        await ApplyThrough(log, b, last);
        await ApplyThrough(log, c, last);

        Assert.That(a.Batches, Is.EqualTo(40));
        Assert.That(a.PendingExamples, Is.EqualTo(5), "the partial batch waits for more examples");
        Assert.That(a.AppliedSequence, Is.EqualTo(last - 5));
        Assert.That(a.DiscardedBatches, Is.Zero);
        Assert.That(a.Node.Adapters.Where(x => x is not null).Sum(x => x!.MergedRows), Is.GreaterThan(0), "the hot set must overflow a pool (merges are part of the state)");
        ulong fa = a.Fingerprint();
        Assert.That(fa, Is.Not.EqualTo(untrained), "training changed the adapters");
        Assert.That(b.Fingerprint(), Is.EqualTo(fa));
        Assert.That(c.Fingerprint(), Is.EqualTo(fa));
    }

    [Test]
    public async Task ARestartFromACheckpointCatchesUpToTheReplicaThatNeverStopped()
    {
        await using var log = await Log("RESTART");
        var rng = new Random(12);
        var examples = Enumerable.Range(0, 30 * Batch).Select(i => Example(i, _fingerprint, rng)).ToList();
        ulong middle = await PublishAsync(log, examples.Take(13 * Batch + 7));
        string dir = Path.Combine(_root, "restart-ckpt");

        using var steady = Replica("steady");
        ulong savedAt;
        using (var crashed = Replica("crashed"))
        {
            await ApplyThrough(log, crashed, middle);   // stops mid-batch: 7 examples pending, not in the checkpoint
            savedAt = crashed.AppliedSequence;
            Assert.That(savedAt, Is.EqualTo(middle - 7));
            Assert.That(crashed.Node.Adapters.Where(x => x is not null).Sum(x => x!.MergedRows), Is.GreaterThan(0),
                        "rows must have been merged before the checkpoint: the free-slot order after a merge is part of the state");
            FleetCheckpoint.Of(crashed, "RESTART").Save(dir);
            // more applied after the checkpoint and lost in the "crash"
        }
        ulong last = await PublishAsync(log, examples.Skip(13 * Batch + 7));
        await ApplyThrough(log, steady, last);

        var checkpoint = FleetCheckpoint.Load(dir, "RESTART")!;
        Assert.That(checkpoint.AppliedSequence, Is.EqualTo(savedAt));
        using var restarted = new FleetReplica(Load(checkpoint.BasePath), checkpoint.BasePath, Options with { ReplicaId = "crashed" }, Load);
        restarted.Restore(checkpoint);
        await ApplyThrough(log, restarted, last);
        Assert.That(restarted.Fingerprint(), Is.EqualTo(steady.Fingerprint()));
        Assert.That(restarted.ExamplesApplied + (long)savedAt, Is.EqualTo(steady.ExamplesApplied), "every example applied once across the restart");
        Assert.Throws<FleetCheckpointException>(() => FleetCheckpoint.Load(dir, "OTHER"));
    }

    [Test]
    public async Task ADuplicatePublishIsNotTrainedTwice()
    {
        await using var log = await Log("DEDUP");
        var rng = new Random(13);
        var examples = Enumerable.Range(0, 8 * Batch).Select(i => Example(i, _fingerprint, rng)).ToList();
        ulong last = await PublishAsync(log, examples);
        // A retried publish (same request from the same replica) lands on the first copy's sequence.
        foreach (var e in examples.Take(20))
        {
            var ack = await log.PublishAsync($"{e.Replica}-{e.RequestId}", LogRecord.Encode(e), CancellationToken.None);
            Assert.That(ack.Duplicate, Is.True);
        }
        var state = await log.StateAsync(CancellationToken.None);
        Assert.That(state.Messages, Is.EqualTo((ulong)examples.Count));
        Assert.That(state.LastSequence, Is.EqualTo(last));

        // A redelivered entry (same sequence) is ignored by the replica.
        using var once = Replica("once");
        using var twice = Replica("twice");
        await ApplyThrough(log, once, last);
        var entries = new List<LogEntry>();
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            await foreach (var e in log.ReadAsync("twice", 1, cts.Token)) { entries.Add(e); if (e.Sequence >= last) break; }
        foreach (var e in entries) { twice.Apply(e); twice.Apply(e); }
        Assert.That(twice.Redelivered, Is.EqualTo(entries.Count));
        Assert.That(twice.ExamplesApplied, Is.EqualTo(examples.Count));
        Assert.That(twice.Fingerprint(), Is.EqualTo(once.Fingerprint()));
    }

    [Test]
    public async Task ABaseMarkerSwitchesEveryReplicaAtTheSamePosition()
    {
        await using var log = await Log("MARKER");
        var rng = new Random(14);
        var records = new List<LogRecord>();
        records.AddRange(Enumerable.Range(0, 5 * Batch + 3).Select(i => Example(i, _fingerprint, rng)));
        records.Add(new BaseMarker(_nextFingerprint, _nextBase));
        records.Add(Example(9999, _fingerprint, rng));   // a straggler served by the old base: skipped everywhere
        records.AddRange(Enumerable.Range(10_000, 6 * Batch).Select(i => Example(i, _nextFingerprint, rng)));
        ulong last = await PublishAsync(log, records);

        using var a = Replica("ma");
        using var b = Replica("mb");
        await ApplyThrough(log, a, last);
        await ApplyThrough(log, b, last);
        foreach (var r in new[] { a, b })
        {
            Assert.That(r.Node.Fingerprint, Is.EqualTo(_nextFingerprint));
            Assert.That(r.BaseSwitches, Is.EqualTo(1));
            Assert.That(r.Skipped, Is.EqualTo(1));
            Assert.That(r.Batches, Is.EqualTo(5 + 1 + 6), "the partial batch before the marker is trained on the old base");
        }
        Assert.That(a.Fingerprint(), Is.EqualTo(b.Fingerprint()));
    }

    [Test]
    public async Task BatchedMessagesTrainBitIdenticallyToSingleExampleMessages()
    {
        await using var single = await Log("SINGLE");
        await using var batched = await Log("BATCHED");
        var rng = new Random(15);
        var examples = Enumerable.Range(0, 25 * Batch + 9).Select(i => Example(i, _fingerprint, rng) with { Replica = "p1" }).ToList();
        ulong lastSingle = await PublishAsync(single, examples);
        // Through the publisher: up to 37 examples a message (not a multiple of the training batch, so training
        // batches end inside messages), compressed, with a linger long enough to fill most messages.
        int messages;
        await using (var publisher = new ExamplePublisher(batched, 10_000, () => null, _ => { },
                         new PublisherBatching { MaxExamples = 37, Linger = TimeSpan.FromMilliseconds(200), Compress = true }))
        {
            foreach (var e in examples) publisher.Enqueue(e);
            Assert.That(await publisher.FlushAsync(TimeSpan.FromSeconds(30)), Is.True);
            messages = (int)publisher.MessageCounts.Messages;
        }
        var state = await batched.StateAsync(CancellationToken.None);
        Assert.That(state.Messages, Is.EqualTo((ulong)messages));
        Assert.That(messages, Is.LessThan(examples.Count / 4), "examples were grouped into messages");

        using var a = Replica("sa");
        using var b = Replica("ba");
        await ApplyThrough(single, a, lastSingle);
        await ApplyThrough(batched, b, state.LastSequence);
        Assert.That(b.ExamplesApplied, Is.EqualTo(a.ExamplesApplied).And.EqualTo(25 * Batch));
        Assert.That((a.PendingExamples, b.PendingExamples), Is.EqualTo((9, 9)));
        Assert.That(b.Skipped, Is.Zero);
        Assert.That(b.Fingerprint(), Is.EqualTo(a.Fingerprint()), "the grouping into messages does not change the training");
    }

    [Test]
    public async Task ARetriedBatchIsNotTrainedTwice()
    {
        await using var log = await Log("BATCHDEDUP");
        var rng = new Random(16);
        var batches = Enumerable.Range(0, 6).Select(k => new ExampleBatch(Enumerable.Range(k * 40, 40).Select(i => Example(i, _fingerprint, rng) with { Replica = "p1" }).ToArray())).ToList();
        ulong last = 0;
        foreach (var batch in batches) last = (await log.PublishAsync(batch.MessageId, LogRecord.Encode(batch, compress: true), CancellationToken.None)).Sequence;
        // A publish retried after a lost acknowledgement: the same batch under the same id lands on the first copy.
        var retry = await log.PublishAsync(batches[2].MessageId, LogRecord.Encode(batches[2], compress: true), CancellationToken.None);
        Assert.That(retry.Duplicate, Is.True);
        Assert.That(retry.Sequence, Is.EqualTo(3ul));
        Assert.That((await log.StateAsync(CancellationToken.None)).Messages, Is.EqualTo(6ul));

        using var once = Replica("bonce");
        using var twice = Replica("btwice");
        await ApplyThrough(log, once, last);
        var entries = new List<LogEntry>();
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            await foreach (var e in log.ReadAsync("btwice", 1, cts.Token)) { entries.Add(e); if (e.Sequence >= last) break; }
        foreach (var e in entries) { twice.Apply(e); twice.Apply(e); }   // a redelivered batch (same sequence) is ignored
        Assert.That(twice.Redelivered, Is.EqualTo(6));
        Assert.That(twice.ExamplesApplied + twice.PendingExamples, Is.EqualTo(240));
        Assert.That(twice.Fingerprint(), Is.EqualTo(once.Fingerprint()));
    }

    [Test]
    public async Task AReplicaRestartedInsideABatchedMessageEqualsOneThatNeverStopped()
    {
        await using var log = await Log("BATCHRESTART");
        var rng = new Random(17);
        // Messages of 23 examples; training batches of 16 end inside most of them.
        var batches = Enumerable.Range(0, 20).Select(k => new ExampleBatch(Enumerable.Range(k * 23, 23).Select(i => Example(i, _fingerprint, rng) with { Replica = "p1" }).ToArray())).ToList();
        ulong last = 0;
        foreach (var batch in batches) last = (await log.PublishAsync(batch.MessageId, LogRecord.Encode(batch), CancellationToken.None)).Sequence;
        string dir = Path.Combine(_root, "batch-restart-ckpt");

        using var steady = Replica("bsteady");
        await ApplyThrough(log, steady, last);
        FleetCheckpoint saved;
        using (var crashed = Replica("bcrashed"))
        {
            await ApplyThrough(log, crashed, 9);   // 207 examples: 12 steps (192), the 12th ended inside message 9
            Assert.That((crashed.AppliedSequence, crashed.AppliedOffset), Is.EqualTo((8ul, 8)), "192 = 8 × 23 + 8");
            Assert.That(crashed.PendingExamples, Is.EqualTo(15));
            FleetCheckpoint.Of(crashed, "BATCHRESTART").Save(dir);
        }
        saved = FleetCheckpoint.Load(dir, "BATCHRESTART")!;
        Assert.That((saved.AppliedSequence, saved.AppliedOffset), Is.EqualTo((8ul, 8)));
        using var restarted = new FleetReplica(Load(saved.BasePath), saved.BasePath, Options with { ReplicaId = "bcrashed" }, Load);
        restarted.Restore(saved);
        await ApplyThrough(log, restarted, last);   // reads from message 9, skips its first 8 examples
        Assert.That(restarted.ExamplesApplied + 192, Is.EqualTo(steady.ExamplesApplied), "every example applied once across the restart");
        Assert.That(restarted.Fingerprint(), Is.EqualTo(steady.Fingerprint()));
        Assert.That((restarted.AppliedSequence, restarted.AppliedOffset), Is.EqualTo((steady.AppliedSequence, steady.AppliedOffset)));
    }

    [Test]
    public void TheBatchCodecRoundTripsCompressedOrNotAndRefusesDamagedBatches()
    {
        var rng = new Random(2);
        var examples = Enumerable.Range(0, 50).Select(i => Example(i, "abc", rng) with { Replica = "p1", RequestId = 7 - 3L * i, EventTime = i % 2 == 0 ? long.MaxValue : long.MinValue }).ToArray();
        examples[3] = examples[3] with { Bags = [.. examples[3].Bags.Select((b, t) => t == 0 ? Array.Empty<long>() : b)] };
        examples[4] = examples[4] with { Bags = [.. examples[4].Bags.Select((b, t) => t == 1 ? new long[] { 5, 5, long.MaxValue, 0 } : b)] };
        var batch = new ExampleBatch(examples);
        foreach (bool compress in new[] { false, true })
        {
            var bytes = LogRecord.Encode(batch, compress);
            Assert.That(bytes[2], Is.EqualTo(compress ? 1 : 0), "the flag byte says whether the body is compressed");
            var back = (ExampleBatch)LogRecord.Decode(bytes);
            Assert.That(back.Examples, Has.Count.EqualTo(examples.Length));
            for (int i = 0; i < examples.Length; i++)
            {
                var (x, y) = (examples[i], back.Examples[i]);
                Assert.That((y.RequestId, y.EventTime, y.Label, y.BaseFingerprint, y.Replica), Is.EqualTo((x.RequestId, x.EventTime, x.Label, x.BaseFingerprint, x.Replica)));
                Assert.That(y.Dense.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(x.Dense.Select(BitConverter.SingleToUInt32Bits)));
                Assert.That(y.Bags, Is.EqualTo(x.Bags), "ids in bag order");
            }
            for (int cut = 0; cut < bytes.Length; cut += Math.Max(1, bytes.Length / 97))
                Assert.Throws<InvalidDataException>(() => LogRecord.Decode(bytes.AsSpan(0, cut)), $"cut at {cut}");
            Assert.Throws<InvalidDataException>(() => LogRecord.Decode([.. bytes, 0]));
        }
        var unknownFlags = LogRecord.Encode(batch); unknownFlags[2] = 4;
        Assert.That(Assert.Throws<InvalidDataException>(() => LogRecord.Decode(unknownFlags))!.Message, Does.Contain("flags 4"));
        var newerFormat = LogRecord.Encode(batch); newerFormat[1] = 3;
        Assert.That(Assert.Throws<InvalidDataException>(() => LogRecord.Decode(newerFormat))!.Message, Does.Contain("format 3, this engine reads 1..2"));
        Assert.That(batch.MessageId, Is.EqualTo("p1-b7+50"));
        Assert.Throws<ArgumentException>(() => LogRecord.Encode(new ExampleBatch([examples[0], examples[1] with { Replica = "p2" }])));
    }

    [Test]
    public void TheCodecRoundTripsAndRefusesDamagedRecords()
    {
        var e = Example(1, "abc", new Random(1)) with { RequestId = -5, EventTime = long.MaxValue };
        var bytes = LogRecord.Encode(e);
        var back = (TrainingExample)LogRecord.Decode(bytes);
        Assert.That((back.RequestId, back.EventTime, back.Label, back.BaseFingerprint, back.Replica), Is.EqualTo((e.RequestId, e.EventTime, e.Label, e.BaseFingerprint, e.Replica)));
        Assert.That(back.Dense, Is.EqualTo(e.Dense));
        Assert.That(back.Bags, Is.EqualTo(e.Bags));
        Assert.That(LogRecord.Decode(LogRecord.Encode(new BaseMarker("f", "/p"))), Is.EqualTo(new BaseMarker("f", "/p")));
        for (int cut = 0; cut < bytes.Length; cut++)
            Assert.Throws<InvalidDataException>(() => LogRecord.Decode(bytes.AsSpan(0, cut)), $"cut at {cut}");
        Assert.Throws<InvalidDataException>(() => LogRecord.Decode([.. bytes, 0]));
        var wrongKind = bytes.ToArray(); wrongKind[0] = 9;
        Assert.Throws<InvalidDataException>(() => LogRecord.Decode(wrongKind));
    }

    [Test]
    public async Task AnUnreachableLogIsAOneLineError()
    {
        var e = Assert.ThrowsAsync<FleetUnavailableException>(async () =>
            await NatsExampleLog.ConnectAsync("nats://127.0.0.1:1", new FleetStreamOptions { Timeout = TimeSpan.FromSeconds(1) }));
        Assert.That(e!.Message, Does.StartWith("fleet log nats://127.0.0.1:1:").And.Not.Contain("\n"));
        await Task.CompletedTask;
    }

    [Test]
    public void Log1pCountColumnsTravelAsCountsAndDecodeToTheSameBits()
    {
        // Every count up to 2^20 and a spread beyond: either refused (the float column keeps it) or decoded bit for bit.
        int refused = 0;
        for (uint k = 0; k < (1u << 20); k++)
        {
            float v = (float)Math.Log(1 + (double)k);
            if (!Log1pCount.TryEncode(v, out uint count)) { refused++; continue; }
            Assert.That(BitConverter.SingleToUInt32Bits(Log1pCount.Decode(count)), Is.EqualTo(BitConverter.SingleToUInt32Bits(v)), $"count {k}");
        }
        Assert.That(refused, Is.LessThan(1 << 10), "only values near a float rounding flip are refused");
        foreach (float v in new[] { -0f, -1f, 0.5f, float.NaN, float.PositiveInfinity, 30f, MathF.BitIncrement((float)Math.Log(8)) })
            Assert.That(Log1pCount.TryEncode(v, out _), Is.False, $"{v} is not log1p of a count");

        // A batch whose columns are counts but for one stray value: that column keeps its float bytes, the others shrink.
        var rng = new Random(4);
        var examples = Enumerable.Range(0, 64).Select(i => Example(i, "abc", rng) with
        {
            Replica = "p1", Dense = [.. Enumerable.Range(0, Dense).Select(_ => (float)Math.Log(1 + (double)rng.Next(0, 5000)))],
        }).ToArray();
        var plainColumns = examples.Select(e => e with { Dense = [.. e.Dense.Select(x => x + 0.1f)] }).ToArray();
        examples[5].Dense[0] = 0.3f;
        var bytes = LogRecord.Encode(new ExampleBatch(examples));
        var back = (ExampleBatch)LogRecord.Decode(bytes);
        for (int i = 0; i < examples.Length; i++)
            Assert.That(back.Examples[i].Dense.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(examples[i].Dense.Select(BitConverter.SingleToUInt32Bits)));
        Assert.That(bytes.Length, Is.LessThan(LogRecord.Encode(new ExampleBatch(plainColumns)).Length - (Dense - 1) * 64), "count columns take under 3 bytes a value");
    }

    [Test]
    public async Task FleetStatusLeavesTheStreamsSubjectAlone()
    {
        const string stream = "STATUSSUBJECT";
        await using var log = await Log(stream);
        var rng = new Random(3);
        await PublishAsync(log, [Example(0, _fingerprint, rng)]);
        var (text, _) = await FleetReplicaHost.StatusAsync(_nats.Url, stream, CancellationToken.None);
        Assert.That(text, Does.Contain("1 messages"));
        // Had the status rewritten the stream to the default subject, the stream would no longer take this one's publishes.
        ulong next = await PublishAsync(log, [Example(1, _fingerprint, rng)]);
        Assert.That(next, Is.EqualTo(2UL), "the stream still takes the fleet's own subject after `fleet status`");

        var e = Assert.ThrowsAsync<FleetUnavailableException>(async () => await FleetReplicaHost.StatusAsync(_nats.Url, "NO_SUCH_STREAM", CancellationToken.None));
        Assert.That(e!.Message, Does.Contain("NO_SUCH_STREAM").And.Not.Contain("\n"));
    }
}
