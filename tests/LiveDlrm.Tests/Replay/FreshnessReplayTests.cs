using System.Text.Json;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Metrics;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Replay;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Replay;

internal class FreshnessReplayTests
{
    ReplayReport _report = null!;
    string _dir = null!;

    static ReplayOptions SmallOptions() => new()
    {
        ServeBatch = 128,
        BasePrefixFraction = 0.3,
        BottomMlp = [16, 16],
        TopMlp = [32, 1],
        LabelDelaySeconds = 60,
        WindowSeconds = 3600,
        OnlineTrainer = new OnlineTrainerOptions
        {
            BatchSize = 128,
            MaxBatchWait = null,
            Adapter = new AdapterOptions { InitialRank = 4, MaxRank = 8, RankAdaptInterval = 50, BudgetFraction = 0.05 },
        },
    };

    /// <summary>A drifting synthetic stream small enough for a unit test (~7 h of event time).</summary>
    static SyntheticStreamConfig DriftingStream() => new()
    {
        Seed = 11, Drift = 4, EventsPerSecond = 1, Users = 1000, InitialItems = 500, MaxNewItems = 1500,
    };

    [OneTimeSetUp]
    public void RunSmallReplay()
    {
        TorchRuntime.EnsureInitialised();
        var replay = new FreshnessReplay(() => new SyntheticEventSource(DriftingStream(), 24_000), SmallOptions(), "test stream");
        _report = replay.Run();
        _dir = Path.Combine(Path.GetTempPath(), "livedlrm-replay-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (_dir is not null && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public void LiveModeOnEmulatedPimServesWhatTheCpuServes()
    {
        // Same replay, live mode only, base rows pooled by the emulated DPUs and the adapter term added on the host.
        // Merges must reach MRAM for the two to agree: a merge drops A, so a stale MRAM row would lose the update.
        var options = SmallOptions() with
        {
            Modes = [UpdateMode.Live],
            LiveBaseBackend = () => new LiveDlrm.Pim.PimEmbeddingBackend(new LiveDlrm.Pim.PimBackendOptions { Backend = LiveDlrm.Pim.PimBackendKind.Emulated, DpusPerTable = 8 }),
        };
        var pim = new FreshnessReplay(() => new SyntheticEventSource(DriftingStream(), 24_000), options, "test stream").Run().Mode(UpdateMode.Live)!;
        var cpu = _report.Mode(UpdateMode.Live)!;
        long merged = pim.Live!.Tables.Sum(t => t.MergedRows);
        TestContext.Out.WriteLine($"pim {pim.Overall} ({pim.Live.BaseBackend}), cpu {cpu.Overall} ({cpu.Live!.BaseBackend}); {merged} rows merged");
        Assert.That(pim.Live.BaseBackend, Is.EqualTo("pim-emulated"));
        Assert.That(cpu.Live.BaseBackend, Does.StartWith("cpu"));
        Assert.That(merged, Is.GreaterThan(0), "the stream must exercise merges");
        Assert.That(pim.Overall.Auc, Is.EqualTo(cpu.Overall.Auc).Within(1e-6));
        Assert.That(pim.Overall.LogLoss, Is.EqualTo(cpu.Overall.LogLoss).Within(1e-6));
    }

    [Test]
    public void LiveBeatsStaleOnADriftingStream()
    {
        var stale = _report.Mode(UpdateMode.Stale)!;
        var live = _report.Mode(UpdateMode.Live)!;
        TestContext.Out.WriteLine($"stale {stale.Overall}\nlive  {live.Overall}\ndelta {_report.Mode(UpdateMode.Delta)!.Overall}");
        Assert.That(live.Overall.Events, Is.EqualTo(stale.Overall.Events));
        Assert.That(live.Overall.Auc, Is.GreaterThan(stale.Overall.Auc + 0.005));
        Assert.That(live.Cost.NetworkBytes, Is.Zero);
        Assert.That(live.Live!.Drops, Is.Zero);
        Assert.That(live.Live.Samples, Is.GreaterThan(live.Overall.Events / 2), "the trainer saw the labelled events");
        Assert.That(live.Live.AdapterMemoryPctMax, Is.LessThanOrEqualTo(live.Live.AdapterBudgetPct));
        foreach (var t in live.Live.Tables.Where(t => t.Adapted)) Assert.That(t.AdapterBytesMax, Is.LessThanOrEqualTo(t.BudgetBytes), t.Table);
    }

    [Test]
    public void DeltaShipsRowsOnItsSyncSchedule()
    {
        var delta = _report.Mode(UpdateMode.Delta)!;
        // The report's span ends at the last window's end, up to an hour after the last event.
        long span = _report.ReplayEnd - _report.ReplayStart;
        Assert.That(delta.Cost.Syncs, Is.InRange(span / 600 - 7, span / 600));
        Assert.That(delta.Cost.NetworkBytes, Is.GreaterThan(0));
        Assert.That(delta.Cost.TrainerCpuSeconds, Is.GreaterThan(0));
        Assert.That(_report.Mode(UpdateMode.Stale)!.Cost.CpuSeconds, Is.Zero);
    }

    [Test]
    public void ReportJsonHasTheRequiredFields()
    {
        string path = Path.Combine(_dir, "report.json");
        _report.WriteJson(path);
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var modes = doc.RootElement.GetProperty("modes");
        foreach (var name in new[] { "stale", "delta", "live" })
        {
            var m = modes.GetProperty(name);
            Assert.That(m.GetProperty("overall").GetProperty("auc").GetDouble(), Is.InRange(0.0, 1.0), name);
            Assert.That(m.GetProperty("overall").GetProperty("logloss").GetDouble(), Is.GreaterThan(0), name);
            var windows = m.GetProperty("windows");
            Assert.That(windows.GetArrayLength(), Is.GreaterThanOrEqualTo(5), name);
            foreach (var w in windows.EnumerateArray())
            {
                Assert.That(w.GetProperty("end").GetInt64() - w.GetProperty("start").GetInt64(), Is.EqualTo(3600));
                Assert.That(w.GetProperty("events").GetInt64(), Is.GreaterThan(0));
                Assert.That(w.TryGetProperty("auc", out _) && w.TryGetProperty("logloss", out _), Is.True);
            }
            Assert.That(m.GetProperty("cost").GetProperty("network_bytes").GetInt64(), Is.GreaterThanOrEqualTo(0));
            Assert.That(m.GetProperty("cost").GetProperty("cpu_seconds").GetDouble(), Is.GreaterThanOrEqualTo(0));
        }
        var live = modes.GetProperty("live");
        Assert.That(live.GetProperty("adapter_memory_pct_max").GetDouble(), Is.InRange(0.0, 5.0));
        Assert.That(live.GetProperty("rank_history").ValueKind, Is.EqualTo(JsonValueKind.Array));
        Assert.That(live.GetProperty("rank_history").GetArrayLength(), Is.GreaterThan(0), "rank adaptation runs every 50 steps");
        Assert.That(modes.GetProperty("delta").GetProperty("cost").GetProperty("network_bytes").GetInt64(), Is.GreaterThan(0));
    }

    [Test]
    public void PlotsAreWritten()
    {
        var files = ReplayPlots.Write(_report, _dir);
        Assert.That(files, Has.Count.EqualTo(2));
        foreach (var f in files) Assert.That(new FileInfo(f).Length, Is.GreaterThan(1000), f);
    }

    [Test]
    public void ProgressiveEvaluationNeverUsesALabelBeforeScoringTheEvent()
    {
        // Every event has its own embedding row and a coin-flip label: only a model that saw an event's label before
        // scoring it could rank it. First show the stream makes a leak visible: learning first, scoring after.
        const int events = 6000;
        var options = SmallOptions() with
        {
            LabelDelaySeconds = 0,
            BasePrefixFraction = 0.2,
            OnlineTrainer = SmallOptions().OnlineTrainer with { BatchSize = 64, Adapter = new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.2, LearningRateA = 0.5f, LearningRateB = 0.05f } },
        };
        using (var source = new MemorisingStream(events))
        {
            var config = DlrmConfig.ForLayout(source.Schema.Layout, options.BottomMlp, options.TopMlp);
            using var live = LiveModel.Create(config, 1, new LiveModelOptions { Trainer = options.OnlineTrainer, BaseBackend = ModelCopy.InlineCpuBackend });
            var model = live.Model;
            var trainer = live.Trainer;
            var batch = new EventBatch(source.Schema.Layout, 512);
            source.Read(batch);
            var served = Enumerable.Range(0, batch.Count).Select(i => { var s = ServedEvent.FromBatch(batch, i, default, config.Dim); s.Label = batch.Labels[i]; return s; }).ToList();
            for (int epoch = 0; epoch < 5; epoch++)
                for (int k = 0; k < served.Count; k += 64) trainer.TrainOn(served.GetRange(k, 64));
            double leakedAuc = BinaryMetrics.Auc(model.Predict(batch), batch.Labels);
            TestContext.Out.WriteLine($"AUC when labels are learned before scoring: {leakedAuc:F4}");
            Assert.That(leakedAuc, Is.GreaterThan(0.75), "the stream must expose a leak");
        }

        var report = new FreshnessReplay(() => new MemorisingStream(events), options, "memorising stream").Run();
        foreach (var m in report.Modes)
        {
            TestContext.Out.WriteLine($"{m.Name}: {m.Overall}");
            Assert.That(m.Overall.Auc, Is.InRange(0.44, 0.56), $"{m.Name} ranked events it had not seen the labels of");
        }
        Assert.That(report.Mode(UpdateMode.Live)!.Live!.Samples, Is.GreaterThan(events / 2), "the live trainer did learn");
    }

    [Test]
    public void OptionsAreValidatedWithTheirNames()
    {
        Assert.That(() => new ReplayOptions { Modes = [] }.Validate(), Throws.ArgumentException.With.Message.Contains("mode"));
        Assert.That(() => new ReplayOptions { BasePrefixFraction = 1.5 }.Validate(), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("prefix"));
        Assert.That(() => new ReplayOptions { SyncIntervalSeconds = 0 }.Validate(), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("SyncIntervalSeconds"));
    }

    [Test]
    public void OutOfOrderTimestampsAreRejected()
    {
        var options = SmallOptions() with { Modes = [UpdateMode.Stale] };
        var replay = new FreshnessReplay(() => new MemorisingStream(300, shuffleTimeAt: 150), options, "bad stream");
        Assert.That(() => replay.Run(), Throws.InstanceOf<DataFormatException>().With.Message.Contains("event 150"));
    }

    /// <summary>Events with a unique row each in table "event", one constant row in "const", a random dense
    /// feature, coin-flip labels, one event per second.</summary>
    sealed class MemorisingStream : IEventSource
    {
        readonly int _events;
        readonly int? _shuffleAt;
        int _next;
        Random _random = new(5);

        public MemorisingStream(int events, int? shuffleTimeAt = null)
        {
            _events = events;
            _shuffleAt = shuffleTimeAt;
            Schema = new StreamSchema("memorising", ["label", "timestamp", "x", "event", "const"], "label",
                [new DenseColumn("x", DenseTransform.None)],
                [new SparseColumn("event", "event", events, SparseMapping.Integer), new SparseColumn("const", "const", 64, SparseMapping.Integer)],
                timestamp: "timestamp");
        }

        public StreamSchema Schema { get; }

        public int Read(EventBatch batch)
        {
            batch.Clear();
            while (!batch.IsFull && _next < _events)
            {
                long time = 1_700_000_000 + _next - (_next == _shuffleAt ? 10 : 0);
                int row = batch.AddEvent(_random.Next(2), time, _next);
                batch.DenseRowForWrite(row)[0] = (float)_random.NextDouble();
                batch.AddIndex(0, _next);
                batch.AddIndex(1, 0);
                _next++;
            }
            return batch.Count;
        }

        public void Reset() { _next = 0; _random = new Random(5); }
        public void Dispose() { }
    }
}
