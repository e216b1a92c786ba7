using System.Net;
using System.Text.Json;
using Grpc.Core;
using LiveDlrm.Runtime;
using LiveDlrm.Serving;
using LiveDlrm.Serving.Grpc;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Serving;

/// <summary>The server in process (TestServer): scoring over JSON and gRPC, the label join with implicit negatives,
/// refused requests, admin authentication, reload under load, drain, and /metrics.</summary>
internal class ServingApiTests
{
    string _root = "", _modelA = "", _modelB = "";

    [OneTimeSetUp]
    public void Models()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-serve");
        _modelA = SaveCheckpoint(Path.Combine(_root, "a"), seed: 1);
        _modelB = SaveCheckpoint(Path.Combine(_root, "b"), seed: 2);
    }

    [OneTimeTearDown]
    public void Cleanup() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    [Test]
    public async Task JsonAndGrpcScoreTheSameEventsAlike()
    {
        await using var s = await StartAsync(Options(_modelA, o => o.Trainer = false));
        var json = await ScoreAsync(s.Http, Body(Event(1, requestId: 42), Event(2)));
        Assert.That(json.Scores, Has.Length.EqualTo(2));
        Assert.That(json.Scores, Has.All.InRange(0f, 1f));
        Assert.That(json.RequestIds[0], Is.EqualTo(42), "a caller's id is kept");
        Assert.That(json.RequestIds[1], Is.GreaterThanOrEqualTo(1L << 62), "id 0 gets a server id");
        Assert.That(json.Model, Is.EqualTo(s.Host.Node.Fingerprint));

        var request = new ScoreRequest();
        foreach (var e in new[] { Event(1, 43), Event(2) })
        {
            using var doc = JsonDocument.Parse(e);
            var ev = new Event { RequestId = doc.RootElement.TryGetProperty("requestId", out var id) ? id.GetInt64() : 0 };
            foreach (var d in doc.RootElement.GetProperty("dense").EnumerateArray()) ev.Dense.Add((float)d.GetDouble());
            foreach (var bag in doc.RootElement.GetProperty("sparse").EnumerateArray())
            {
                var b = new Bag();
                foreach (var i in bag.EnumerateArray()) b.Ids.Add(i.GetInt64());
                ev.Sparse.Add(b);
            }
            request.Events.Add(ev);
        }
        var grpc = await new LiveNode.LiveNodeClient(s.Channel).ScoreAsync(request);
        Assert.That(grpc.Scores.ToArray(), Is.EqualTo(json.Scores), "same events, same model, no training: same scores");
        Assert.That(grpc.RequestIds[0], Is.EqualTo(43));
    }

    [Test]
    public async Task FeedbackJoinsServedRequestsAndTrainsTheAdapters()
    {
        await using var s = await StartAsync(Options(_modelA));
        var scored = await ScoreAsync(s.Http, Body(Enumerable.Range(0, 16).Select(i => Event(100 + i)).ToArray()));
        var reply = await FeedbackAsync(s.Http, scored.RequestIds.Select(id => (id, 1f)));
        Assert.That(reply, Is.EqualTo(new JsonFeedback(16, 0, 0)));
        var again = await FeedbackAsync(s.Http, [(scored.RequestIds[0], 0f)]);
        Assert.That(again, Is.EqualTo(new JsonFeedback(0, 1, 0)), "a second label for the same request is not trained");
        Assert.That(await WaitUntilAsync(() => Task.FromResult(s.Host.Node.Status.Samples >= 16)), Is.True, "the trainer trained the 16 labels");
        Assert.That(s.Host.Node.Adapters.Where(a => a is not null).Sum(a => a!.ActiveRows), Is.GreaterThan(0), "the labels moved adapter rows");
        var rescored = await ScoreAsync(s.Http, Body(Enumerable.Range(0, 16).Select(i => Event(100 + i)).ToArray()));
        Assert.That(rescored.Scores, Is.Not.EqualTo(scored.Scores), "serving sees the trained adapters");
    }

    [TestCase(LabelPolicy.ImplicitNegative)]
    [TestCase(LabelPolicy.Off)]
    public async Task UnlabelledRequestsExpireAfterTheWindow(LabelPolicy policy)
    {
        await using var s = await StartAsync(Options(_modelA, o => { o.Labels = policy; o.LabelWindow = TimeSpan.FromMilliseconds(300); }));
        var scored = await ScoreAsync(s.Http, Body(Enumerable.Range(0, 10).Select(i => Event(200 + i)).ToArray()));
        var joined = await FeedbackAsync(s.Http, scored.RequestIds.Take(3).Select(id => (id, 1f)));
        Assert.That(joined.Joined, Is.EqualTo(3));
        string counter = policy == LabelPolicy.ImplicitNegative ? "livedlrm_feedback_implicit_negatives_total" : "livedlrm_feedback_expired_unlabelled_total";
        Assert.That(await WaitUntilAsync(async () => Sum(await ScrapeAsync(s.Http), counter) == 7), Is.True, $"{counter} reaches the 7 unlabelled requests");
        var late = await FeedbackAsync(s.Http, [(scored.RequestIds[5], 1f), (scored.RequestIds[0], 0f), (12345, 1f)]);
        Assert.That(late, Is.EqualTo(new JsonFeedback(0, 1, 2)), "labels after the window are late (even for one labelled in time); an id never served is unknown");
        long expected = policy == LabelPolicy.ImplicitNegative ? 10 : 3;
        Assert.That(await WaitUntilAsync(() => Task.FromResult(s.Host.Node.Status.Samples >= expected)), Is.True);
        await Task.Delay(300);
        Assert.That(s.Host.Node.Status.Samples, Is.EqualTo(expected), "each request is trained at most once");
    }

    static readonly string Good = Event(1);

    // (body, status, the field the error must start with)
    static IEnumerable<TestCaseData> BadScores()
    {
        yield return new TestCaseData("{not json", 400, "body:");
        yield return new TestCaseData("[1,2]", 400, "body:");
        yield return new TestCaseData("{\"events\":[], \"extra\":1}", 400, "extra:");
        yield return new TestCaseData("{\"events\":[]}", 400, "events:");
        yield return new TestCaseData("{\"events\":{}}", 400, "events:");
        yield return new TestCaseData(Body(Enumerable.Repeat(Good, 65).ToArray()), 400, "events:");
        yield return new TestCaseData(Body(Good, "7"), 400, "events[1]:");
        yield return new TestCaseData(Body(Good.Replace("\"dense\":[", "\"dense\":[0.5,")), 400, "events[0].dense:");
        yield return new TestCaseData(Body("{\"dense\":[1e39,0,0],\"sparse\":[[1],[1],[1]]}"), 400, "events[0].dense[0]:");
        yield return new TestCaseData(Body("{\"dense\":[0,true,0],\"sparse\":[[1],[1],[1]]}"), 400, "events[0].dense[1]:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],[1]]}"), 400, "events[0].sparse:");
        yield return new TestCaseData(Body(Good, "{\"dense\":[0,0,0],\"sparse\":[[20000],[1],[1]]}"), 400, "events[1].sparse[0][0]:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],[1],[0,-1]]}"), 400, "events[0].sparse[2][1]:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],[1.5],[1]]}"), 400, "events[0].sparse[1][0]:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],[1,2,3,4,5,6,7,8,9],[1]]}"), 400, "events[0].sparse[1]:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],7,[1]]}"), 400, "events[0].sparse[1]:");
        yield return new TestCaseData(Body("{\"requestId\":-3,\"dense\":[0,0,0],\"sparse\":[[1],[1],[1]]}"), 400, "events[0].requestId:");
        yield return new TestCaseData(Body("{\"requestId\":\"9\",\"dense\":[0,0,0],\"sparse\":[[1],[1],[1]]}"), 400, "events[0].requestId:");
        yield return new TestCaseData(Body(Event(1, 9), Event(2, 9)), 400, "events[1].requestId:");
        yield return new TestCaseData(Body("{\"dense\":[0,0,0],\"sparse\":[[1],[1],[1]],\"label\":1}"), 400, "events[0].label:");
        yield return new TestCaseData(Body(Enumerable.Repeat(Event(3), 60).ToArray()) + new string(' ', 64 * 1024), 413, "body:");
    }

    [TestCaseSource(nameof(BadScores))]
    public async Task BadScoreRequestsAreRefusedWholeNamingTheField(string body, int status, string field)
    {
        await using var s = await StartAsync(Options(_modelA, o => o.Trainer = false));
        long stored = s.Host.Node.Status.RingStored;
        using var response = await s.Http.PostAsync("/v1/score", Json(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(status), text);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error").GetString()!;
        Assert.That(error, Does.StartWith(field));
        Assert.That(error, Does.Not.Contain("\n").And.Not.Contain("   at "), "one line, no stack trace");
        Assert.That(s.Host.Node.Status.RingStored, Is.EqualTo(stored), "nothing of a refused batch was served or remembered");
        Assert.That(Sum(await ScrapeAsync(s.Http), "livedlrm_serve_errors_total"), Is.EqualTo(1));
    }

    [TestCase("{\"requestId\":5,\"label\":2}", "label:")]
    [TestCase("{\"requestId\":5,\"label\":\"1\"}", "label:")]
    [TestCase("{\"label\":1}", "requestId:")]
    [TestCase("{\"requestId\":0,\"label\":1}", "requestId:")]
    [TestCase("{\"requestId\":5,\"label\":1,\"weight\":3}", "weight:")]
    [TestCase("[{\"requestId\":5,\"label\":1},{\"requestId\":6,\"label\":0.5}]", "[1].label:")]
    [TestCase("[]", "body:")]
    [TestCase("5", "body:")]
    public async Task BadFeedbackIsRefusedWholeNamingTheField(string body, string field)
    {
        await using var s = await StartAsync(Options(_modelA, o => o.Trainer = false));
        var scored = await ScoreAsync(s.Http, Body(Event(1, 5), Event(2, 6)));
        using var response = await s.Http.PostAsync("/v1/feedback", Json(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), text);
        Assert.That(JsonDocument.Parse(text).RootElement.GetProperty("error").GetString(), Does.StartWith(field));
        var after = await FeedbackAsync(s.Http, [(5, 1f), (6, 0f)]);
        Assert.That(after.Joined, Is.EqualTo(2), "no label of the refused body was applied");
    }

    [Test]
    public async Task GrpcRefusesBadRequestsWithInvalidArgument()
    {
        await using var s = await StartAsync(Options(_modelA, o => o.Trainer = false));
        var client = new LiveNode.LiveNodeClient(s.Channel);
        Event Ok() { var e = new Event(); e.Dense.Add([0.1f, 0.2f, 0.3f]); foreach (var _ in Rows) e.Sparse.Add(new Bag { Ids = { 1 } }); return e; }
        var nan = Ok(); nan.Dense[2] = float.NaN;
        var bags = Ok(); bags.Sparse.RemoveAt(2);
        var range = Ok(); range.Sparse[1].Ids[0] = 5_000;
        foreach (var (ev, field) in new[] { (nan, "events[1].dense[2]:"), (bags, "events[1].sparse:"), (range, "events[1].sparse[1][0]:") })
        {
            var e = Assert.ThrowsAsync<RpcException>(() => client.ScoreAsync(new ScoreRequest { Events = { Ok(), ev } }).ResponseAsync)!;
            Assert.That(e.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
            Assert.That(e.Status.Detail, Does.StartWith(field));
        }
        var empty = Assert.ThrowsAsync<RpcException>(() => client.ScoreAsync(new ScoreRequest()).ResponseAsync)!;
        Assert.That(empty.Status.Detail, Does.StartWith("events:"));
        var label = Assert.ThrowsAsync<RpcException>(() => client.FeedbackAsync(new FeedbackRequest { RequestId = 1, Label = 0.5f }).ResponseAsync)!;
        Assert.That(label.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
        Assert.That(label.Status.Detail, Does.StartWith("label:"));
        Assert.That(s.Host.Node.Status.RingStored, Is.Zero);

        var ok = await client.ScoreAsync(new ScoreRequest { Events = { Ok(), Ok() } });
        using var stream = client.FeedbackStream();
        await stream.RequestStream.WriteAsync(new FeedbackRequest { RequestId = ok.RequestIds[0], Label = 1 });
        await stream.RequestStream.WriteAsync(new FeedbackRequest { RequestId = ok.RequestIds[1], Label = 0 });
        await stream.RequestStream.WriteAsync(new FeedbackRequest { RequestId = 77, Label = 0 });
        await stream.RequestStream.CompleteAsync();
        var reply = await stream.ResponseAsync;
        Assert.That((reply.Joined, reply.Unknown, reply.Late), Is.EqualTo((2L, 1L, 0L)));
    }

    [Test]
    public async Task AdminEndpointsNeedTheBearerToken()
    {
        string dir = TempDir("livedlrm-serve-admin");
        try
        {
            await using (var s = await StartAsync(Options(_modelA, o => { o.Trainer = false; o.AdminTokenFile = TokenFile(dir); })))
            {
                foreach (var (method, path) in new[] { (HttpMethod.Get, "/admin/adapters"), (HttpMethod.Post, "/admin/reload"), (HttpMethod.Post, "/admin/trainer"), (HttpMethod.Post, "/admin/checkpoint") })
                {
                    using var none = await s.Http.SendAsync(Admin(method, path, null));
                    Assert.That(none.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), path);
                    using var wrong = await s.Http.SendAsync(Admin(method, path, "test-token-0123456789abcdeX"));
                    Assert.That(wrong.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), path);
                }
                var state = await AdminJsonAsync<AdapterState>(s.Http, HttpMethod.Get, "/admin/adapters", "test-token-0123456789abcdef");
                Assert.That(state.Model, Is.EqualTo(s.Host.Node.Fingerprint));
            }
            await using (var s = await StartAsync(Options(_modelA, o => o.Trainer = false)))
            {
                using var disabled = await s.Http.SendAsync(Admin(HttpMethod.Get, "/admin/adapters", "test-token-0123456789abcdef"));
                Assert.That(disabled.StatusCode, Is.EqualTo(HttpStatusCode.NotFound), "no token file: admin endpoints disabled");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public async Task FullQosRunsAnUnpinnedTrainerUnderSchedIdleOrTheChosenNice()
    {
        string dir = TempDir("livedlrm-serve-priority");
        const string token = "test-token-0123456789abcdef";
        try
        {
            await using var s = await StartAsync(Options(_modelA, o => { o.Qos = QosMode.Full; o.QosTrainerPriority = LiveDlrm.Serving.Qos.TrainerPriority.Idle; o.AdminTokenFile = TokenFile(dir, token); }));
            if (s.Host.Qos.PinsTrainer) Assert.Ignore("this machine pins the trainer per the plan (its priority is the plan's)");
            int processNice = LiveDlrm.Numa.ThreadAffinity.GetNice(LiveDlrm.Numa.ThreadAffinity.CurrentThreadId());
            if (processNice != 0) Assert.Ignore($"the tests run at nice {processNice}: the treatments below (nice 10, back to 0) need a nice-0 process");
            // The trainer thread lists its id, then lowers itself: wait (bounded) for what the treatment should be.
            (bool Idle, int Nice) Treatment((bool Idle, int Nice) expected)
            {
                (bool, int) seen = default;
                for (int i = 0; i < 300; i++)
                {
                    if (s.Host.Node.TrainerThreadIds is [int tid, ..])
                    {
                        try { seen = (LiveDlrm.Numa.ThreadAffinity.IsIdlePolicy(tid), LiveDlrm.Numa.ThreadAffinity.GetNice(tid)); }
                        catch (InvalidOperationException) { }   // the thread of a previous start just exited
                        if (seen == expected) return seen;
                    }
                    Thread.Sleep(10);
                }
                return seen;
            }
            Assert.That(new ServeOptions().QosTrainerPriority, Is.EqualTo(LiveDlrm.Serving.Qos.TrainerPriority.Nice), "the default");
            Assert.That(Treatment((true, 0)), Is.EqualTo((true, 0)), "full, unpinned, idle: SCHED_IDLE");

            await AdminJsonAsync<JsonElement>(s.Http, HttpMethod.Post, "/admin/trainer", token, "{\"running\":true,\"qos\":\"full\",\"trainerPriority\":\"nice\"}");
            var nice = (false, LiveDlrm.Serving.Qos.TrainerQos.UnpinnedTrainerNice);
            Assert.That(Treatment(nice), Is.EqualTo(nice), "full, nice: nice 10");

            await AdminJsonAsync<JsonElement>(s.Http, HttpMethod.Post, "/admin/trainer", token, "{\"running\":true,\"qos\":\"off\"}");
            Assert.That(Treatment((false, 0)), Is.EqualTo((false, 0)), "off: untouched");

            using var bad = await s.Http.SendAsync(Admin(HttpMethod.Post, "/admin/trainer", token, "{\"running\":true,\"trainerPriority\":\"low\"}"));
            Assert.That(bad.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
            Assert.That(await bad.Content.ReadAsStringAsync(), Does.Contain("trainerPriority"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public async Task ReloadUnderConcurrentScoringFailsNoRequestAndMixesNoModels()
    {
        string dir = TempDir("livedlrm-serve-reload");
        const string token = "test-token-0123456789abcdef";
        try
        {
            await using var s = await StartAsync(Options(_modelA, o => { o.Trainer = false; o.AdminTokenFile = TokenFile(dir, token); }));
            string body = Body(Enumerable.Range(0, 32).Select(i => Event(300 + i)).ToArray());
            var a = await ScoreAsync(s.Http, body);
            var seen = new System.Collections.Concurrent.ConcurrentBag<JsonScore>();
            var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
            using var stop = new CancellationTokenSource();
            var loops = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    using var response = await s.Http.PostAsync("/v1/score", Json(body));
                    string text = await response.Content.ReadAsStringAsync();
                    if (response.StatusCode != HttpStatusCode.OK) failures.Add($"{(int)response.StatusCode} {text}");
                    else seen.Add(JsonSerializer.Deserialize<JsonScore>(text, ServingHost.Json)!);
                }
            })).ToArray();
            foreach (var model in new[] { _modelB, _modelA, _modelB })
            {
                var reply = await AdminJsonAsync<JsonElement>(s.Http, HttpMethod.Post, "/admin/reload", token, $"{{\"checkpoint\":{JsonSerializer.Serialize(model)}}}");
                Assert.That(reply.GetProperty("model").GetString(), Is.EqualTo(LiveDlrm.Serving.Node.LiveModelNode.BaseFingerprint(model)));
                await Task.Delay(100);
            }
            var b = await ScoreAsync(s.Http, body);
            stop.Cancel();
            await Task.WhenAll(loops);
            Assert.That(failures, Is.Empty);
            Assert.That(b.Model, Is.Not.EqualTo(a.Model));
            Assert.That(b.Scores, Is.Not.EqualTo(a.Scores));
            Assert.That(seen.Count(r => r.Model == a.Model), Is.GreaterThan(0));
            Assert.That(seen.Count(r => r.Model == b.Model), Is.GreaterThan(0), "requests ran while the second model served");
            foreach (var r in seen)
                Assert.That(r.Scores, Is.EqualTo(r.Model == a.Model ? a.Scores : b.Scores), "every batch scored wholly by one model");

            using var bad = await s.Http.SendAsync(Admin(HttpMethod.Post, "/admin/reload", token, "{\"checkpoint\":\"/nonexistent/ckpt\"}"));
            Assert.That(bad.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
            Assert.That((await ScoreAsync(s.Http, body)).Model, Is.EqualTo(b.Model), "a failed reload keeps the serving model");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public async Task DrainFinishesInFlightRequestsRefusesNewOnesAndSavesTheAdapters()
    {
        string dir = TempDir("livedlrm-serve-drain");
        try
        {
            var options = Options(_modelA, o => { o.Adapters = Path.Combine(dir, "adapters"); o.CheckpointInterval = TimeSpan.FromHours(1); });
            var s = await StartAsync(options);
            string body = Body(Enumerable.Range(0, 64).Select(i => Event(400 + i)).ToArray());
            var first = await ScoreAsync(s.Http, body);
            await FeedbackAsync(s.Http, first.RequestIds.Select(id => (id, 1f)));
            Assert.That(await WaitUntilAsync(() => Task.FromResult(s.Host.Node.Status.Samples >= 64)), Is.True);
            var statuses = new System.Collections.Concurrent.ConcurrentBag<HttpStatusCode>();
            var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
            using var stop = new CancellationTokenSource();
            var loops = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    try
                    {
                        using var response = await s.Http.PostAsync("/v1/score", Json(body));
                        statuses.Add(response.StatusCode);
                        if (response.StatusCode == HttpStatusCode.OK)
                            Assert.That(JsonSerializer.Deserialize<JsonScore>(await response.Content.ReadAsStringAsync(), ServingHost.Json)!.Scores, Has.Length.EqualTo(64));
                        if (response.StatusCode == HttpStatusCode.ServiceUnavailable) return;
                    }
                    catch (Exception e) when (e is HttpRequestException or InvalidOperationException or OperationCanceledException) { return; }   // the test server is gone
                    catch (Exception e) { errors.Add(e.Message); return; }
                }
            })).ToArray();
            await Task.Delay(200);
            await s.Host.App.StopAsync();
            Assert.That(s.Host.Draining, Is.True);
            // The trainer runs until the finish (it stops there, then the adapters are saved): the state to compare
            // with is the one the node stopped with, not one read while it was still training.
            await s.Host.FinishAsync();
            ulong live = s.Host.AdapterFingerprint();
            stop.Cancel();
            await Task.WhenAll(loops);
            await s.DisposeAsync();
            Assert.That(errors, Is.Empty);
            Assert.That(statuses, Has.All.EqualTo(HttpStatusCode.OK).Or.EqualTo(HttpStatusCode.ServiceUnavailable), "in-flight requests finish; new ones get 503");
            Assert.That(statuses.Count(c => c == HttpStatusCode.OK), Is.GreaterThan(0));
            var store = new LiveDlrm.Online.Persistence.AdapterStore(options.Adapters!);
            Assert.That(LiveDlrm.Online.Persistence.AdapterStore.Fingerprint(store.ReadVerified()!), Is.EqualTo(live), "the adapters were saved on shutdown");
            Assert.That(Directory.GetFiles(options.Adapters!), Has.Length.EqualTo(1), "no temporary file left behind");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public async Task MetricsAreValidPrometheusTextWithMonotonicCounters()
    {
        await using var s = await StartAsync(Options(_modelA));
        var scored = await ScoreAsync(s.Http, Body(Enumerable.Range(0, 8).Select(i => Event(500 + i)).ToArray()));
        await FeedbackAsync(s.Http, scored.RequestIds.Select(id => (id, 1f)));
        Assert.That(await WaitUntilAsync(() => Task.FromResult(s.Host.Node.Status.Samples >= 8)), Is.True);
        var (types, first) = ParseMetrics(await s.Http.GetStringAsync("/metrics"));
        var expected = new Dictionary<string, string>
        {
            ["livedlrm_serve_requests_total"] = "counter", ["livedlrm_serve_events_total"] = "counter",
            ["livedlrm_serve_request_duration_seconds"] = "histogram", ["livedlrm_feedback_labels_total"] = "counter",
            ["livedlrm_trainer_samples_total"] = "counter", ["livedlrm_trainer_steps_total"] = "counter",
            ["livedlrm_requests_stored_total"] = "counter", ["livedlrm_trainer_lag_seconds"] = "gauge",
            ["livedlrm_trainer_queue_length"] = "gauge", ["livedlrm_adapter_memory_ratio"] = "gauge", ["livedlrm_adapter_rank"] = "gauge",
            ["livedlrm_adapter_memory_bytes"] = "gauge",
            ["livedlrm_qos_duty_cycle_ratio"] = "gauge", ["livedlrm_qos_decisions_total"] = "counter",
            ["livedlrm_adapter_checkpoint_age_seconds"] = "gauge",
        };
        foreach (var (name, type) in expected) Assert.That(types.GetValueOrDefault(name), Is.EqualTo(type), name);
        foreach (var (name, type) in types)
        {
            Assert.That(name, Does.Match("^[a-z_][a-z0-9_]*$"), "Prometheus name");
            if (type == "counter") Assert.That(name, Does.EndWith("_total"), name);
        }
        Assert.That(first.Any(x => x.Name == "livedlrm_serve_request_duration_seconds_bucket" && x.Labels.Contains("le=\"+Inf\"")), Is.True);
        Assert.That(Sum(first, "livedlrm_serve_request_duration_seconds_count"), Is.EqualTo(1));
        Assert.That(first.Where(x => x.Name == "livedlrm_adapter_rank").Select(x => x.Labels), Has.Some.Contains("table=\"users\""));
        Assert.That(Sum(first, "livedlrm_serve_events_total"), Is.EqualTo(8));
        Assert.That(Sum(first, "livedlrm_feedback_labels_total", "result=\"joined\""), Is.EqualTo(8));

        for (int i = 0; i < 3; i++) await ScoreAsync(s.Http, Body(Event(600 + i)));
        var second = await ScrapeAsync(s.Http);
        foreach (var counter in types.Where(t => t.Value == "counter").Select(t => t.Key))
            foreach (var sample in first.Where(x => x.Name == counter))
                Assert.That(second.Single(x => x.Name == counter && x.Labels == sample.Labels).Value, Is.GreaterThanOrEqualTo(sample.Value), $"{counter}{{{sample.Labels}}} never decreases");
        Assert.That(Sum(second, "livedlrm_serve_events_total"), Is.EqualTo(11));
        Assert.That(Sum(second, "livedlrm_serve_request_duration_seconds_count"), Is.EqualTo(4));
    }
}
