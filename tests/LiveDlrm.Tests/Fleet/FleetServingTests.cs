using System.Net;
using LiveDlrm.Runtime;
using LiveDlrm.Serving;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Fleet;

/// <summary>Serving nodes in a fleet (<c>serve --fleet</c>) against a real nats-server: two nodes given halves of
/// the traffic end with equal adapters, a restarted node replays from its checkpoint, a reload moves both at one
/// marker, a broker lost while serving fails no request and the spool drains on its return, an unreachable log at
/// start is an error (or, optional, a node that serves and says so), and the fleet metrics are on /metrics.</summary>
[NonParallelizable]
internal class FleetServingTests
{
    const string Token = "fleet-token-0123456789abcdef";
    string _root = "", _base = "", _base2 = "";
    NatsServerProcess _nats = null!;

    [OneTimeSetUp]
    public async Task Setup()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-fleet-serve");
        _base = SaveCheckpoint(Path.Combine(_root, "base"), seed: 7);
        _base2 = SaveCheckpoint(Path.Combine(_root, "base2"), seed: 8);
        _nats = await NatsServerProcess.StartAsync();
    }

    [OneTimeTearDown]
    public async Task Teardown()
    {
        if (_nats is not null) await _nats.DisposeAsync();
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }

    ServeOptions FleetOptions(string url, string stream, string replica, string? adapters = null, Action<ServeOptions>? change = null) => Options(_base, o =>
    {
        o.Fleet = url;
        o.ReplicaId = replica;
        o.FleetStream = stream;
        // Its own subject: `fleet status` (which SPLIT runs while the nodes publish) only looks the stream up.
        o.FleetSubject = "livedlrm.examples." + stream.ToLowerInvariant();
        o.FleetBatch = 8;
        // One example per message, so log sequences count examples and the assertions can name positions; grouped
        // messages train identically
        // (FleetReplicaTests.BatchedMessagesTrainBitIdenticallyToSingleExampleMessages).
        o.FleetMessageExamples = 1;
        o.Adapters = adapters;
        o.CheckpointInterval = TimeSpan.FromMilliseconds(200);
        o.AdminTokenFile = TokenFile(Directory.CreateDirectory(Path.Combine(_root, "token-" + replica + "-" + stream)).FullName, Token);
        change?.Invoke(o);
    });

    /// <summary>Scores <paramref name="events"/> events on <paramref name="node"/> (4 per request) and labels each one.</summary>
    static async Task TrafficAsync(InProcess node, int seed, int events)
    {
        var rng = new Random(seed);
        for (int i = 0; i < events; i += 4)
        {
            var score = await ScoreAsync(node.Http, Body(Enumerable.Range(0, 4).Select(k => Event(seed * 1000 + i + k)).ToArray()));
            var feedback = await FeedbackAsync(node.Http, score.RequestIds.Select(id => (id, (float)rng.Next(2))));
            Assert.That(feedback.Joined, Is.EqualTo(4));
        }
    }

    static async Task<ulong> AppliedAsync(InProcess node, ulong sequence)
    {
        Assert.That(await node.Host.Fleet!.Runner.WaitForAsync(sequence, TimeSpan.FromSeconds(30)), Is.True, $"{node.Host.Fleet.ReplicaId} reached sequence {sequence} ({node.Host.Fleet.Runner.Failure?.Message ?? "applying"})");
        Assert.That(await WaitUntilAsync(() => Task.FromResult(node.Host.Fleet.Runner.AppliedSequence == sequence), 10), Is.True, "whole batches applied");
        return node.Host.AdapterFingerprint();
    }

    [Test]
    public async Task TwoServeNodesGivenHalvesOfTheTrafficHoldEqualAdaptersAndARestartReplaysFromItsCheckpoint()
    {
        const string stream = "SPLIT";
        string adaptersB = Path.Combine(_root, "split-b");
        ulong initial;
        await using (var a = await StartAsync(FleetOptions(_nats.Url, stream, "a")))
        {
            initial = a.Host.AdapterFingerprint();
            await using (var b = await StartAsync(FleetOptions(_nats.Url, stream, "b", adaptersB)))
            {
                // 48 examples served by a, 48 by b, interleaved: every node trains on all 96 in log order.
                for (int round = 0; round < 6; round++)
                {
                    await TrafficAsync(a, 100 + round, 8);
                    await TrafficAsync(b, 200 + round, 8);
                }
                Assert.That(await a.Host.Fleet!.Publisher.FlushAsync(TimeSpan.FromSeconds(10)) && await b.Host.Fleet!.Publisher.FlushAsync(TimeSpan.FromSeconds(10)), Is.True);
                ulong fa = await AppliedAsync(a, 96), fb = await AppliedAsync(b, 96);
                Assert.That(fb, Is.EqualTo(fa), "both serving nodes hold the adapters of the same 96 examples");
                Assert.That(fa, Is.Not.EqualTo(initial), "the adapters trained");
                Assert.That(a.Host.Fleet.Replica.ExamplesApplied, Is.EqualTo(96));

                // Both report to the status board, and `fleet status` sees them agree.
                Assert.That(await WaitUntilAsync(async () =>
                {
                    var (text, disagree) = await FleetReplicaHost.StatusAsync(_nats.Url, stream, CancellationToken.None);
                    return !disagree && text.Contains("agree: 2 replica(s) at sequence 96", StringComparison.Ordinal);
                }, 15), Is.True, "fleet status shows both nodes at 96, agreeing");
            }

            // b stopped with a checkpoint at 96; a serves on. b restarted from its checkpoint replays only what
            // came after and ends equal to a.
            var checkpoint = FleetCheckpoint.Load(adaptersB, stream);
            Assert.That(checkpoint!.AppliedSequence, Is.EqualTo(96UL));
            await TrafficAsync(a, 300, 32);
            var lines = new List<string>();
            await using (var b = await StartAsync(FleetOptions(_nats.Url, stream, "b", adaptersB)))
            {
                ulong fa = await AppliedAsync(a, 128), fb = await AppliedAsync(b, 128);
                Assert.That(fb, Is.EqualTo(fa), "the restarted node replayed 97..128 onto its checkpoint and equals the node that never stopped");
                Assert.That(b.Host.Fleet!.Replica.ExamplesApplied, Is.EqualTo(32), "only the examples after its checkpoint were applied again");
                Assert.That(b.Log.Any(l => l.Contains("restored from", StringComparison.Ordinal) && l.Contains("at sequence 96", StringComparison.Ordinal)), Is.True, string.Join("\n", b.Log));
            }
        }
    }

    [Test]
    public async Task AReloadPublishesABaseMarkerAndEveryNodeSwitchesAtIt()
    {
        const string stream = "RELOAD";
        await using var a = await StartAsync(FleetOptions(_nats.Url, stream, "a"));
        await using var b = await StartAsync(FleetOptions(_nats.Url, stream, "b"));
        await TrafficAsync(a, 1, 8);
        await TrafficAsync(b, 2, 8);
        Assert.That(await a.Host.Fleet!.Publisher.FlushAsync(TimeSpan.FromSeconds(10)) && await b.Host.Fleet!.Publisher.FlushAsync(TimeSpan.FromSeconds(10)), Is.True);
        await AppliedAsync(a, 16);
        await AppliedAsync(b, 16);

        using var response = await a.Http.SendAsync(Admin(HttpMethod.Post, "/admin/reload", Token, $"{{\"checkpoint\": \"{_base2}\"}}"));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), text);
        Assert.That(text, Does.Contain("published at sequence 17").And.Contain("this node now serves"));
        string next = LiveModelNode.BaseFingerprint(_base2);
        Assert.That(a.Host.Node.Fingerprint, Is.EqualTo(next));
        Assert.That(await WaitUntilAsync(() => Task.FromResult(b.Host.Node.Fingerprint == next), 30), Is.True, "the other node switched at the marker");
        Assert.That(b.Host.Fleet!.Runner.AppliedSequence, Is.EqualTo(17UL));

        // Traffic on the new base trains both alike; the marker's position is the same on both.
        await TrafficAsync(a, 3, 8);
        await TrafficAsync(b, 4, 8);
        Assert.That(await a.Host.Fleet.Publisher.FlushAsync(TimeSpan.FromSeconds(10)) && await b.Host.Fleet.Publisher.FlushAsync(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(await AppliedAsync(b, 33), Is.EqualTo(await AppliedAsync(a, 33)));
        Assert.That(a.Host.Fleet.Replica.BaseSwitches, Is.EqualTo(1));
        Assert.That(b.Host.Fleet.Replica.BaseSwitches, Is.EqualTo(1));
    }

    [Test]
    public async Task LosingTheLogWhileServingFailsNoRequestAndTheSpoolDrainsOnItsReturn()
    {
        await using var nats = await NatsServerProcess.StartAsync();   // its own server: this test kills it
        const string stream = "LOSS";
        await using var node = await StartAsync(FleetOptions(nats.Url, stream, "a"));
        await TrafficAsync(node, 1, 16);
        await AppliedAsync(node, 16);

        nats.Stop();   // SIGKILL
        await TrafficAsync(node, 2, 32);   // every score and feedback answers 200 (asserted inside)
        var fleet = node.Host.Fleet!;
        Assert.That(await WaitUntilAsync(() => Task.FromResult(fleet.Publisher.Errors > 0), 20), Is.True, "publishes fail while the server is gone");
        Assert.That(fleet.Publisher.Waiting, Is.GreaterThan(0), "examples wait in the spool");
        var during = await ScrapeAsync(node.Http);
        Assert.That(Sum(during, "livedlrm_fleet_spool_length"), Is.GreaterThan(0));
        Assert.That(Sum(during, "livedlrm_fleet_publish_errors_total"), Is.GreaterThan(0));
        Assert.That(Sum(during, "livedlrm_fleet_connected"), Is.EqualTo(0));
        using (var ready = await node.Http.GetAsync("/readyz"))
            Assert.That(ready.StatusCode, Is.EqualTo(HttpStatusCode.OK), "still serving, so still ready");

        await nats.Start();   // same port, same store
        Assert.That(await fleet.Publisher.FlushAsync(TimeSpan.FromSeconds(30)), Is.True, "the spool drains on reconnect");
        await AppliedAsync(node, 48);
        Assert.That(fleet.Replica.ExamplesApplied, Is.EqualTo(48), "every example spooled during the outage was applied once");
        Assert.That(fleet.Publisher.Dropped, Is.EqualTo(0));

        Assert.That(await WaitUntilAsync(async () => Sum(await ScrapeAsync(node.Http), "livedlrm_fleet_consumer_lag_messages") == 0, 10), Is.True);
        var after = await ScrapeAsync(node.Http);
        Assert.That(Sum(after, "livedlrm_fleet_published_examples_total") + Sum(after, "livedlrm_fleet_publish_duplicates_total"), Is.EqualTo(48),
                    "each example appended once (a publish whose acknowledgement was lost lands as a duplicate of itself)");
        Assert.That(Sum(after, "livedlrm_fleet_publish_retries_total"), Is.GreaterThan(0));
        Assert.That(Sum(after, "livedlrm_fleet_applied_examples_total"), Is.EqualTo(48));
        Assert.That(Sum(after, "livedlrm_fleet_consumed_messages_total"), Is.GreaterThanOrEqualTo(48));
        Assert.That(Sum(after, "livedlrm_fleet_spool_length"), Is.EqualTo(0));
        Assert.That(Sum(after, "livedlrm_fleet_connected"), Is.EqualTo(1));
        Assert.That(after.Any(s => s.Name == "livedlrm_fleet_fingerprint_age_seconds" && s.Value is >= 0 and < 60), Is.True, "fingerprint age reported");
        Assert.That(after.Any(s => s.Name == "livedlrm_fleet_consumer_lag_seconds"), Is.True);
    }

    [TestCase("ftp://127.0.0.1:4222", "r1", 64, false, "--fleet:")]
    [TestCase("nats://127.0.0.1:4222", null, 64, false, "--replica-id:")]
    [TestCase("nats://127.0.0.1:4222", "r 1", 64, false, "--replica-id:")]
    [TestCase("nats://127.0.0.1:4222", "r1", 0, false, "--fleet-batch:")]
    [TestCase("nats://127.0.0.1:4222", "r1", 64, true, "--adapt-last-layer:")]
    [TestCase(null, "r1", 64, false, "--replica-id:")]
    public void FleetOptionsAreCheckedNamingTheOption(string? url, string? replica, int batch, bool lastLayer, string starts)
    {
        var o = Options(_base, o => { o.Fleet = url; o.ReplicaId = replica; o.FleetBatch = batch; o.AdaptLastLayer = lastLayer; });
        var e = Assert.Throws<ArgumentException>(o.Validate)!;
        Assert.That(e.Message, Does.StartWith(starts).And.Not.Contain("\n"));
    }

    [Test]
    public async Task AnUnreachableLogAtStartIsAnErrorUnlessTheFleetIsOptional()
    {
        string url = $"nats://127.0.0.1:{FreePortPair()}";   // nothing listens there
        var e = Assert.ThrowsAsync<FleetUnavailableException>(async () => await StartAsync(FleetOptions(url, "GONE", "a")))!;
        Assert.That(e.Message, Does.StartWith($"fleet log {url}:").And.Not.Contain("\n"));
        Assert.That(e, Is.InstanceOf<UserInputException>(), "the CLI prints it as one line and exits 2");
        var cli = LiveDlrm.Tests.Serving.ServingProcessTests.RunCli($"serve --model {_base} --listen 127.0.0.1:0 --qos off --fleet {url} --replica-id a", TimeSpan.FromSeconds(60));
        Assert.That(cli.ExitCode, Is.EqualTo(2), cli.Output + cli.Error);
        var errorLines = cli.Error.Trim().Split('\n');
        Assert.That(errorLines[^1], Does.StartWith($"livedlrm serve: fleet log {url}:"), cli.Error);
        Assert.That(cli.Error, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(cli.Error, Does.Not.Contain("model:"), "the log is tried before the model is loaded");

        await using var node = await StartAsync(FleetOptions(url, "GONE", "a", change: o => o.FleetOptional = true));
        await TrafficAsync(node, 1, 8);
        using var ready = await node.Http.GetAsync("/readyz");
        Assert.That(ready.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(await ready.Content.ReadAsStringAsync(), Does.Contain("NOT CONNECTED"));
        var metrics = await ScrapeAsync(node.Http);
        Assert.That(Sum(metrics, "livedlrm_fleet_connected"), Is.EqualTo(0));
        Assert.That(node.Host.Fleet!.Publisher.Waiting, Is.EqualTo(8), "the examples wait in the spool");
    }

    [Test]
    public async Task TheReplicaThreadGetsTheTrainersQosTreatment()
    {
        // Full QoS (nice priority): the replica's applying thread is lowered to the trainer's nice value and a
        // duty-cycle controller drives it; with QoS off it keeps the process's nice and nothing throttles it. (An
        // unprivileged process above nice 10 cannot take nice 10: then the thread keeps the process's nice.)
        int processNice = LiveDlrm.Numa.ThreadAffinity.GetNice(LiveDlrm.Numa.ThreadAffinity.CurrentThreadId());
        // Whether a thread of this process may take nice 10 (from a higher nice only with CAP_SYS_NICE).
        bool mayTake10 = false;
        var probe = new Thread(() => mayTake10 = LiveDlrm.Numa.ThreadAffinity.TrySetCurrentThreadNice(LiveDlrm.Serving.Qos.TrainerQos.UnpinnedTrainerNice));
        probe.Start();
        probe.Join();
        foreach (var (mode, stream) in new[] { (QosMode.Full, "QOSFULL"), (QosMode.Off, "QOSOFF") })
        {
            await using var node = await StartAsync(FleetOptions(_nats.Url, stream, "q", change: o => { o.Qos = mode; o.QosTrainerPriority = LiveDlrm.Serving.Qos.TrainerPriority.Nice; }));
            var runner = node.Host.Fleet!.Runner;
            Assert.That(await WaitUntilAsync(() => Task.FromResult(runner.ThreadId != 0), 10), Is.True);
            int expected = mode == QosMode.Full && mayTake10 ? LiveDlrm.Serving.Qos.TrainerQos.UnpinnedTrainerNice : processNice;
            Assert.That(await WaitUntilAsync(() => Task.FromResult(LiveDlrm.Numa.ThreadAffinity.GetNice(runner.ThreadId) == expected), 10), Is.True,
                        $"{mode}: the applying thread at nice {expected}, found {LiveDlrm.Numa.ThreadAffinity.GetNice(runner.ThreadId)}");
            Assert.That(node.Host.Qos.Summary(), mode == QosMode.Full ? Is.Not.EqualTo("no controller") : Is.EqualTo("no controller"), $"{mode}: a duty-cycle controller on the replica");
            // Throttled or not, the log is still applied.
            await TrafficAsync(node, 900, 8);
            Assert.That(await node.Host.Fleet.Publisher.FlushAsync(TimeSpan.FromSeconds(10)), Is.True);
            await AppliedAsync(node, 8);
        }
    }
}
