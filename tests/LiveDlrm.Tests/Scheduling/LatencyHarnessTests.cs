using System.Text.Json;
using LiveDlrm.Embeddings;
using LiveDlrm.Numa;
using LiveDlrm.Scheduling;
using LiveDlrm.Harness;

namespace LiveDlrm.Tests.Scheduling;

/// <summary>The harness's parts checked for behaviour, not speed: ids, workload results, trainer learning and
/// throttling, the load generator's latency accounting, and the JSON a tiny end-to-end run writes.</summary>
internal class LatencyHarnessTests
{
    [Test]
    public void ZipfIdsStayInRangeAreSkewedAndScatterHotRanks()
    {
        const long rows = 10_000;
        var ids = ZipfIds.Generate(rows, 1.05, 200_000, seed: 3);
        Assert.That(ids.Min(), Is.GreaterThanOrEqualTo(0));
        Assert.That(ids.Max(), Is.LessThan(rows));
        var counts = ids.GroupBy(i => i).Select(g => (Id: g.Key, Count: g.Count())).OrderByDescending(x => x.Count).ToList();
        Assert.That(counts[0].Count, Is.GreaterThan(50 * 200_000 / rows), "the hottest id is far above the uniform share");
        var top = counts.Take(10).Select(x => x.Id).Order().ToList();
        Assert.That(top.Zip(top.Skip(1)).Count(p => p.Second - p.First == 1), Is.LessThan(9), "hot ids are not one contiguous block");
        Assert.That(ZipfIds.Generate(rows, 1.05, 1000, seed: 3), Is.EqualTo(ids.Take(1000)), "deterministic for a seed");
        Assert.Throws<ArgumentOutOfRangeException>(() => ZipfIds.Generate(0, 1, 10, 1));
    }

    [Test]
    public void ZipfIdsCoverLargeTablesBeyondTheExactHead()
    {
        long rows = 5L << 20;   // more ranks than the exact CDF holds: the tail is sampled too
        var ids = ZipfIds.Generate(rows, 0.6, 100_000, seed: 1);
        Assert.That(ids.Max(), Is.LessThan(rows));
        Assert.That(ids.Distinct().Count(), Is.GreaterThan(50_000), "a mild skew over 5 M rows repeats few ids");
    }

    [Test]
    public void WorkloadServesLookupsEqualToTheReference()
    {
        var options = new LookupWorkloadOptions { Tables = 2, Rows = 5000, Dim = 24, Batch = 16, Pooling = 5, Seed = 11 };
        using var w = new EmbeddingLookupWorkload(options, poolThreads: 1);
        for (int request = 0; request < 3; request++)
        {
            w.Serve(request);
            for (int t = 0; t < options.Tables; t++)
            {
                var expected = new float[options.Batch * options.Dim];
                EmbeddingBagReference.Forward(w.Tables[t], w.LastIds(t), w.Offsets, expected);
                Assert.That(w.LastOutput(t).ToArray(), Is.EqualTo(expected).Within(1e-4), $"request {request}, table {t}");
                Assert.That(expected.Any(v => v != 0), "tables hold non-zero values");
            }
        }
        Assert.That(w.Name, Is.EqualTo("embedding-lookup-proxy"));
    }

    [Test]
    public void WorkerPoolWorkersArePinnedWhereThePlanSays()
    {
        var plan = ResourcePlan.Create(Topology.Detect(), new PlanOptions { InferenceWorkers = 2 });
        var inside = new IReadOnlyList<int>?[2];
        using var pool = new EmbeddingWorkerPool(2, i => { plan.InferenceWorkerStart(i); inside[i] = ThreadAffinity.GetCurrentThreadAffinity(); });
        for (int i = 0; i < 2; i++)
        {
            Assert.That(inside[i], Is.EqualTo(plan.InferenceWorkerPus[i]), $"worker {i} from inside");
            Assert.That(ThreadAffinity.GetAffinity(pool.ThreadIds[i]), Is.EqualTo(plan.InferenceWorkerPus[i]), $"worker {i} by TID from outside");
        }
    }

    static TrainerProxyOptions TinyTrainer => new() { Tables = 2, Rows = 2000, Dim = 16, SamplesPerStep = 16, IdsPerSample = 4, Seed = 5 };

    [Test]
    public void TrainerProxyLearns()
    {
        using var trainer = new SparseAdagradTrainerProxy(TinyTrainer);
        double first = trainer.TrainSteps(20, seed: 1);
        trainer.TrainSteps(1500, seed: 2);
        double later = trainer.TrainSteps(20, seed: 1);
        Assert.That(later, Is.LessThan(first * 0.8), $"log-loss {first:F3} → {later:F3} on the same samples");
    }

    [Test]
    public void TrainerThreadsArePinnedByTheHookAndStopWhenPaused()
    {
        var plan = ResourcePlan.Create(Topology.Detect());
        using var trainer = new SparseAdagradTrainerProxy(TinyTrainer);
        trainer.Start(plan.TrainerThreadPus.Count, plan.TrainerThreadStart);
        try
        {
            Assert.That(trainer.ThreadIds, Has.Count.EqualTo(plan.TrainerThreadPus.Count));
            for (int i = 0; i < trainer.ThreadIds.Count; i++)
                Assert.That(plan.TrainerThreadPus, Has.Some.EqualTo(ThreadAffinity.GetAffinity(trainer.ThreadIds[i])));
            Assert.That(SpinWait.SpinUntil(() => trainer.SamplesProcessed > 0, 10_000), "the trainer makes progress");
            trainer.Throttle.Pause();
            Thread.Sleep(100);   // let a step in flight finish
            long paused = trainer.SamplesProcessed;
            Thread.Sleep(200);
            Assert.That(trainer.SamplesProcessed, Is.EqualTo(paused), "no progress while paused");
            trainer.Throttle.Resume();
            Assert.That(SpinWait.SpinUntil(() => trainer.SamplesProcessed > paused, 10_000), "progress again after resume");
        }
        finally { trainer.Stop(); }
        Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Start(0));
    }

    /// <summary>A request that takes ≥ 5 ms (it sleeps).</summary>
    sealed class SleepyWorkload(int ms) : IInferenceWorkload
    {
        public string Name => "sleepy";
        public string Description => $"sleeps {ms} ms";
        public IReadOnlyList<int> ThreadIds => [];
        public void Serve(long request) => Thread.Sleep(ms);
        public void Dispose() { }
    }

    [Test]
    public void LatencyCountsFromTheScheduledTimeSoAnOverloadShowsUp()
    {
        // Offered 1000 QPS to a server of at most 200 QPS: a closed-loop tester would report ~5 ms; measured from the
        // schedule, the queue's growth is in the latencies, and what cannot be served in the drain time is dropped.
        var r = OpenLoopLoad.Run(new SleepyWorkload(5), 1000, TimeSpan.FromSeconds(0.5), TimeSpan.Zero, TimeSpan.FromSeconds(0.2), seed: 1);
        Assert.That(r.P99Ms, Is.GreaterThan(100));
        Assert.That(r.P50Ms, Is.GreaterThan(50));
        Assert.That(r.Dropped, Is.GreaterThan(0));
    }

    [Test]
    public void LightLoadServesTheScheduledNumberOfRequests()
    {
        var r = OpenLoopLoad.Run(new SleepyWorkload(0), 200, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(0.1), TimeSpan.FromSeconds(5), seed: 2);
        Assert.That(r.Requests, Is.InRange(130, 270), "Poisson(200): far outside ±5σ means the schedule is wrong");
        Assert.That(r.Dropped, Is.Zero);
        Assert.Throws<ArgumentOutOfRangeException>(() => OpenLoopLoad.Run(new SleepyWorkload(0), 0, TimeSpan.FromSeconds(1), TimeSpan.Zero, TimeSpan.Zero, 1));
    }

    [Test]
    public void TinyEndToEndRunWritesAllModesWithTheRequiredJsonFields()
    {
        var options = new LatencyHarnessOptions
        {
            Kind = LatencyWorkloadKind.Proxy,
            Workload = new LookupWorkloadOptions { Tables = 2, Rows = 4000, Dim = 16, Batch = 8, Pooling = 4 },
            Trainer = TinyTrainer,
            ModeDuration = TimeSpan.FromSeconds(0.6), Warmup = TimeSpan.FromSeconds(0.1), SearchTrial = TimeSpan.FromSeconds(0.2), MaxQps = 200,
        };
        var log = new List<string>();
        var report = LatencyHarness.Run(options, new ListLogger(log));
        Assert.That(report.Modes.Select(m => m.Mode), Is.EqualTo(new[] { LatencyHarness.ModeNoTrainer, LatencyHarness.ModeUnthrottled, LatencyHarness.ModeQos }));
        Assert.That(report.Modes.Select(m => m.Qps), Is.All.EqualTo(100.0), "50 % of the given maximum");
        Assert.That(report.Modes[0].TrainerSamplesPerS, Is.Null);
        Assert.That(report.Modes[1].TrainerSamplesPerS, Is.GreaterThan(0));
        Assert.That(report.Modes[2].QosDecisions, Does.StartWith("decisions"));
        Assert.That(report.Modes[2].HardwareQos, Does.Contain("resctrl"));

        using var doc = JsonDocument.Parse(LatencyReportJson.Serialize(report));
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(3));
        foreach (var mode in doc.RootElement.EnumerateArray())
        {
            foreach (var field in new[] { "qps", "mode", "p50_ms", "p99_ms", "p999_ms", "trainer_samples_per_s", "workload", "max_sustainable_qps" })
                Assert.That(mode.TryGetProperty(field, out _), $"field {field}");
            Assert.That(mode.GetProperty("workload").GetString(), Is.EqualTo("embedding-lookup-proxy"));
            Assert.That(mode.GetProperty("p50_ms").GetDouble(), Is.LessThanOrEqualTo(mode.GetProperty("p99_ms").GetDouble()));
        }
        Assert.That(log, Has.Some.StartsWith("plan: "));
    }

    [Test]
    public void TinyDlrmLiveRunServesThroughAdaptersWhileTheOnlineTrainerTrains()
    {
        var options = new LatencyHarnessOptions
        {
            Dlrm = new DlrmWorkloadOptions { BaseTrainEvents = 2_000, BaseTrainBatch = 256, Batch = 16, RequestBatches = 4 },
            ModeDuration = TimeSpan.FromSeconds(0.8), Warmup = TimeSpan.FromSeconds(0.1), SearchTrial = TimeSpan.FromSeconds(0.2), MaxQps = 100,
        };
        Assert.That(options.Kind, Is.EqualTo(LatencyWorkloadKind.DlrmLive), "the real workload is the default");
        var log = new List<string>();
        var report = LatencyHarness.Run(options, new ListLogger(log));
        Assert.That(report.Modes.Select(m => m.Mode), Is.EqualTo(new[] { LatencyHarness.ModeNoTrainer, LatencyHarness.ModeUnthrottled, LatencyHarness.ModeQos }));
        Assert.That(report.Modes.Select(m => m.Workload), Is.All.EqualTo(DlrmLiveWorkload.WorkloadName));
        Assert.That(report.Modes[0].TrainerSamplesPerS, Is.Null);
        Assert.That(report.Modes[1].TrainerSamplesPerS, Is.GreaterThan(0), "the online trainer consumed labelled events");
        Assert.That(report.WorkloadDescription, Does.Contain("base model trained one pass over 2,000 prefix events"));
        Assert.That(log, Has.Some.StartsWith("dlrm-live: base model trained"));

        using var doc = JsonDocument.Parse(LatencyReportJson.Serialize(report));
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(3));
        foreach (var mode in doc.RootElement.EnumerateArray())
        {
            foreach (var field in new[] { "qps", "mode", "p50_ms", "p99_ms", "p999_ms", "trainer_samples_per_s", "workload" })
                Assert.That(mode.TryGetProperty(field, out _), $"field {field}");
            Assert.That(mode.GetProperty("workload").GetString(), Is.EqualTo("dlrm-live"));
            Assert.That(mode.GetProperty("p50_ms").GetDouble(), Is.LessThanOrEqualTo(mode.GetProperty("p99_ms").GetDouble()));
        }
    }

    [Test]
    public void DlrmWorkloadPredictsProbabilitiesAndTheOnlineTrainerUpdatesItsAdapters()
    {
        using var w = new DlrmLiveWorkload(new DlrmWorkloadOptions { BaseTrainEvents = 0, Batch = 8, RequestBatches = 2,
            OnlineTrainer = new LiveDlrm.Online.OnlineTrainerOptions { BatchSize = 32 } }, poolThreads: 0);
        w.Serve(0);
        var first = w.LastScores.ToArray();
        Assert.That(first, Is.All.InRange(0f, 1f));
        Assert.That(w.Description, Does.Contain("randomly initialised"));
        w.Trainer.Start(1);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (w.Trainer.SamplesProcessed < 256 && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.That(w.Trainer.ThreadIds, Has.Count.EqualTo(2), "trainer + feeder");
        w.Trainer.Stop();
        Assert.That(w.Trainer.SamplesProcessed, Is.GreaterThanOrEqualTo(256));
        Assert.That(w.Live.Adapters.Where(a => a is not null).Sum(a => a!.Step), Is.GreaterThan(0), "adapter steps were taken");
        w.Trainer.Start(1);   // a second mode restarts the same trainer thread, unthrottled
        w.Trainer.Stop();
        Assert.Throws<ArgumentOutOfRangeException>(() => w.Trainer.Start(2));
    }

    [Test]
    public void CliRejectsBadLatencyOptions()
    {
        Assert.That(LiveDlrm.Tests.Cli.CliRun.AssertBadInput("latency", "--load", "2").Message, Does.Contain("--load: 2 is outside"));
        Assert.That(LiveDlrm.Tests.Cli.CliRun.AssertBadInput("latency", "--seconds", "abc").Message, Does.Contain("--seconds: 'abc' is not a number"));
        Assert.That(LiveDlrm.Tests.Cli.CliRun.AssertBadInput("latency", "--workload", "bert").Message, Does.Contain("--workload: 'bert'"));
        var o = ParseLatency("--qos-target-ms", "3.5", "--rows", "1000");
        Assert.That(o.QosTarget, Is.EqualTo(TimeSpan.FromMilliseconds(3.5)));
        Assert.That(o.Workload.Rows, Is.EqualTo(1000));
        Assert.That(o.Kind, Is.EqualTo(LatencyWorkloadKind.DlrmLive));
        Assert.That(ParseLatency("--workload", "proxy").Kind, Is.EqualTo(LatencyWorkloadKind.Proxy));
        Assert.That(ParseLatency("--quick", "--rows", "77").Workload.Rows, Is.EqualTo(77), "a given option wins over --quick's shape");
        Assert.That(ParseLatency("--quick").ModeDuration, Is.EqualTo(TimeSpan.FromSeconds(1)));
    }

    static LatencyHarnessOptions ParseLatency(params string[] args)
    {
        var options = new LiveDlrm.CommandLine.LatencyArgs();
        var command = new System.CommandLine.Command("latency");
        options.AddTo(command);
        var result = command.Parse(args);
        Assert.That(result.Errors, Is.Empty);
        return options.Get(result);
    }
}
