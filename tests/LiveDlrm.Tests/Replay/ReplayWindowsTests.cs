using LiveDlrm.Data;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Lora;
using LiveDlrm.Replay;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Replay;

/// <summary>Windows that fit the data, delta costs that follow events rather than elapsed time, and the id-only
/// model shape, on a long sparse stream: 20 years, id-only (no dense features), bursts of activity between long
/// gaps.</summary>
internal class ReplayWindowsTests
{
    [TestCase(86_400L, 1800L)]              // a day → 48 windows of 30 min
    [TestCase(7 * 86_400L, 6 * 3600L)]      // 3.5 h needed: the next round length up, 28 windows
    [TestCase(20 * 31_556_952L, 182 * 86_400L)]
    [TestCase(300 * 31_556_952L, 7 * 31_556_952L)]
    [TestCase(10L, 1L)]
    public void AutoWindowCutsTheSpanIntoAtMost48RoundWindows(long span, long expected)
    {
        long w = ReplayWindows.AutoWindowSeconds(span);
        Assert.That(w, Is.EqualTo(expected));
        Assert.That((span + w - 1) / w, Is.InRange(Math.Min(span, 19), 48));
    }

    [Test]
    public void AnImplausibleSpanIsAnErrorWithTheUnitHint()
    {
        Assert.That(ReplayWindows.ImplausibleSpan(0, 50L * 31_556_952, "s"), Is.Null);
        Assert.That(ReplayWindows.ImplausibleSpan(1_600_000_000_000, 1_700_000_000_000, "s"), Does.Contain("\"timestampUnit\": \"ms\""));
        var options = new ReplayOptions { Modes = [UpdateMode.Stale], BottomMlp = [8, 8], TopMlp = [8, 1] };
        // Millisecond timestamps read as seconds: 20 years become 20 000.
        var replay = new FreshnessReplay(() => new IdOnlyLongStream(2_000, timeScale: 1000), options, "ms stream");
        Assert.That(() => replay.Run(), Throws.InstanceOf<DataFormatException>().With.Message.Contains("timestampUnit"));
    }

    [Test]
    public void MillisecondTimestampsAreReadAsSecondsWhenTheSchemaSaysSo()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"livedlrm-ms-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "s.tsv");
            File.WriteAllLines(file, ["1\t1700000000999\t3", "0\t1700000001000\t4", "1\t-1500\t5"]);
            var schema = StreamSchema.Parse("""
                { "columns": ["label", "ts", "item"], "label": "label", "timestamp": "ts", "timestampUnit": "ms",
                  "sparse": [ { "name": "item", "rows": 10, "mapping": "integer" } ] }
                """);
            Assert.That(StreamSchema.Parse(schema.ToJson()).TimestampUnit, Is.EqualTo("ms"));
            using var source = new TsvEventSource(file, schema);
            var batch = new EventBatch(schema.Layout, 8);
            source.Read(batch);
            Assert.That(batch.Timestamps.ToArray(), Is.EqualTo(new[] { 1_700_000_000L, 1_700_000_001L, -2L }));
            Assert.That(() => StreamSchema.Parse("""{ "columns": ["label"], "label": "label", "timestampUnit": "ns" }"""),
                        Throws.InstanceOf<SchemaException>().With.Message.StartsWith("timestampUnit"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ALongSparseIdOnlyStreamGetsFewWellFilledWindowsAndDeltaCostFollowsEvents()
    {
        TorchRuntime.EnsureInitialised();
        const int events = 6_000;
        var options = new ReplayOptions
        {
            BottomMlp = [8, 8], TopMlp = [16, 1], ServeBatch = 128, BasePrefixFraction = 0.3,
            OnlineTrainer = new OnlineTrainerOptions
            {
                BatchSize = 64, MaxBatchWait = null, AdaptLastLayer = true,
                Adapter = new AdapterOptions { InitialRank = 2, MaxRank = 4, RankAdaptInterval = 50, BudgetFraction = 0.3 },
            },
        };
        var report = new FreshnessReplay(() => new IdOnlyLongStream(events), options, "20-year id-only stream").Run();

        Assert.That(report.WindowSeconds, Is.EqualTo(182 * 86_400L));
        foreach (var m in report.Modes)
        {
            TestContext.Out.WriteLine($"{m.Name}: {m.Overall}; {m.Windows.Count} windows; syncs {m.Cost.Syncs}, {m.Cost.NetworkBytes} bytes");
            Assert.That(m.Windows.Count, Is.InRange(5, 48), m.Name);
            Assert.That(m.Windows.All(w => double.IsFinite(w.Metrics.Auc)), Is.True, $"{m.Name}: a window without an AUC");
            Assert.That(m.Windows.SkipLast(1).All(w => w.Metrics.Events >= options.MinWindowEvents), Is.True, $"{m.Name}: a thin window");
            Assert.That(m.Windows.Sum(w => w.Metrics.Events), Is.EqualTo(report.ReplayEvents), $"{m.Name}: merged windows keep every event");
            Assert.That(m.Windows.Select(w => (w.Start, w.End)), Is.EqualTo(report.Modes[0].Windows.Select(w => (w.Start, w.End))), "every mode has the same windows");
        }
        var table = ReplayWindows.ConsoleTable(report);
        Assert.That(table[0].TrimStart(), Does.StartWith("start (years)"));
        Assert.That(table.Skip(1).All(l => !l.Contains("NaN")), Is.True);

        // Delta: at most one sync per served batch (a gap of years is one sync point, not ~1 M), and the bytes are
        // exactly the changed rows with their ids plus the dense part per sync that stepped.
        var delta = report.Mode(UpdateMode.Delta)!;
        long batches = (report.ReplayEvents + options.ServeBatch - 1) / options.ServeBatch;
        Assert.That(delta.Cost.Syncs, Is.InRange(1, batches));
        var config = DlrmConfig.ForLayout(new IdOnlyLongStream(1).Schema.Layout, options.BottomMlp, options.TopMlp);
        Assert.That(config.HasBottom, Is.False);
        using var dense = new DlrmDenseNet(config);
        long denseBytes = dense.parameters().Sum(p => p.numel()) * sizeof(float);
        long rowBytes = config.Dim * sizeof(float);
        Assert.That(delta.Cost.NetworkBytes, Is.EqualTo(delta.Cost.RowsShipped * (rowBytes + sizeof(long)) + delta.Cost.Syncs * denseBytes));
        Assert.That(report.Mode(UpdateMode.Live)!.Live!.Samples, Is.GreaterThan(0), "the live mode trains on the id-only model");
    }

    /// <summary>Id-only events (user, item; no dense feature) over 20 years: activity in short bursts separated by
    /// long gaps, a click rate that depends on the user and the item.</summary>
    sealed class IdOnlyLongStream : IEventSource
    {
        const int Users = 300, Items = 200;
        readonly int _events;
        readonly long _timeScale;
        readonly long[] _times;
        int _next;
        Random _random = new(9);

        public IdOnlyLongStream(int events, long timeScale = 1)
        {
            _events = events;
            _timeScale = timeScale;
            Schema = new StreamSchema("id-only", ["label", "ts", "user", "item"], "label", [],
                [new SparseColumn("user", "user", Users, SparseMapping.Integer), new SparseColumn("item", "item", Items, SparseMapping.Integer)],
                timestamp: "ts");
            // Bursts: 40 sessions spread over 20 years, events a minute apart inside each.
            var random = new Random(3);
            var starts = Enumerable.Range(0, 40).Select(_ => (long)(random.NextDouble() * 20 * 31_556_952)).Order().ToArray();
            _times = Enumerable.Range(0, events).Select(i => 1_000_000_000 + starts[i * 40 / events] + 60L * (i % (events / 40 + 1))).ToArray();
            Array.Sort(_times);
        }

        public StreamSchema Schema { get; }

        public int Read(EventBatch batch)
        {
            batch.Clear();
            while (!batch.IsFull && _next < _events)
            {
                int user = _random.Next(Users), item = (int)(Items * Math.Pow(_random.NextDouble(), 2));
                double logit = -1.5 + (user % 7 - 3) * 0.4 + (item % 5 - 2) * 0.5;
                int row = batch.AddEvent(_random.NextDouble() < 1 / (1 + Math.Exp(-logit)) ? 1 : 0, _times[_next] * _timeScale, _next);
                batch.AddIndex(0, user);
                batch.AddIndex(1, item);
                _next++;
            }
            return batch.Count;
        }

        public void Reset() { _next = 0; _random = new Random(9); }
        public void Dispose() { }
    }
}
