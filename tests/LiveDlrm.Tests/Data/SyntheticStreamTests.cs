using LiveDlrm.Data;
using LiveDlrm.Metrics;

namespace LiveDlrm.Tests.Data;

internal class SyntheticStreamTests
{
    static readonly SyntheticStreamConfig Small = new() { Users = 5000, InitialItems = 2000, MaxNewItems = 2000 };

    static EventBatch Generate(SyntheticStreamConfig config, long events)
    {
        using var source = new SyntheticEventSource(config, events);
        return EventBatchAssert.Drain(source, 4096);
    }

    [Test]
    public void SameSeedGivesTheSameStreamAndResetReplaysIt()
    {
        var a = Generate(Small with { Seed = 11 }, 20_000);
        var b = Generate(Small with { Seed = 11 }, 20_000);
        EventBatchAssert.Equal(b, a, "same seed");
        using var source = new SyntheticEventSource(Small with { Seed = 11 }, 20_000);
        EventBatchAssert.Drain(source);
        source.Reset();
        EventBatchAssert.Equal(EventBatchAssert.Drain(source, 999), a, "after Reset");
    }

    [Test]
    public void DifferentSeedGivesADifferentStream()
    {
        var a = Generate(Small with { Seed = 1 }, 5000);
        var b = Generate(Small with { Seed = 2 }, 5000);
        Assert.That(b.Indices(1).ToArray(), Is.Not.EqualTo(a.Indices(1).ToArray()));
    }

    [Test]
    public void EventsAreInTimeOrderAtTheConfiguredRate()
    {
        var config = Small with { EventsPerSecond = 7, StartTime = 1_000_000 };
        var b = Generate(config, 1000);
        for (int i = 0; i < b.Count; i++)
            Assert.That(b.Timestamps[i], Is.EqualTo(1_000_000 + (long)Math.Floor(i / 7.0)));
        Assert.That(b.RequestIds.ToArray(), Is.EqualTo(Enumerable.Range(0, 1000).Select(i => (long)i)));
    }

    [Test]
    public void IndicesStayInsideTheirTablesAndEveryBagHasOneId()
    {
        var config = Small with { Drift = 3, EventsPerSecond = 5 };
        var b = Generate(config, 50_000);
        var layout = config.Schema().Layout;
        for (int f = 0; f < b.SparseCount; f++)
        {
            Assert.That(b.Indices(f).Length, Is.EqualTo(b.Count));
            long rows = layout.Sparse[f].Rows, outside = 0;
            foreach (long i in b.Indices(f)) outside += (ulong)i >= (ulong)rows ? 1 : 0;
            Assert.That(outside, Is.Zero, layout.Sparse[f].Table);
        }
    }

    [Test]
    public void TsvFilesReadBackToTheGeneratedBatches()
    {
        string dir = Directory.CreateTempSubdirectory("ldlm-synth-").FullName;
        try
        {
            string tsv = Path.Combine(dir, "stream.tsv");
            var config = Small with { Seed = 5, EventsPerSecond = 2 };
            var summary = SyntheticStreamFiles.Write(tsv, config, 30_000);
            Assert.That(File.Exists(Path.Combine(dir, "stream.schema.json")) && File.Exists(Path.Combine(dir, "stream.optimum.json")));
            var direct = Generate(config, 30_000);
            using var source = new TsvEventSource(tsv, StreamSchema.Load(summary.SchemaPath), new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
            EventBatchAssert.Equal(EventBatchAssert.Drain(source, 1000), direct, "TSV read back");

            // The optimum written beside the stream is the AUC of the emitted probabilities.
            Assert.That(summary.OptimumAuc, Is.EqualTo(BinaryMetrics.Auc(direct.TrueProbabilities, direct.Labels)).Within(1e-12));
            string json = File.ReadAllText(summary.OptimumPath);
            Assert.That(json, Does.Contain("\"optimum_auc\": " + summary.OptimumAuc.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void LabelsAreDrawnFromTheEmittedProbabilities()
    {
        var b = Generate(Small with { Seed = 9 }, 200_000);
        var p = b.TrueProbabilities.ToArray();
        var y = b.Labels.ToArray();
        // Per decile of p: observed click rate within 4 standard errors of the mean probability.
        var order = Enumerable.Range(0, p.Length).OrderBy(i => p[i]).ToArray();
        for (int d = 0; d < 10; d++)
        {
            var slice = order.Skip(d * p.Length / 10).Take(p.Length / 10).ToArray();
            double meanP = slice.Average(i => (double)p[i]);
            double rate = slice.Average(i => (double)y[i]);
            double se = Math.Sqrt(slice.Average(i => p[i] * (1.0 - p[i])) / slice.Length);
            Assert.That(rate, Is.EqualTo(meanP).Within(4 * se + 1e-9), $"decile {d}");
        }
        // The empirical optimum AUC agrees with the expected one computed from p alone.
        Assert.That(BinaryMetrics.Auc(p, y), Is.EqualTo(BinaryMetrics.ExpectedAuc(p)).Within(0.01));
        Assert.That(BinaryMetrics.ExpectedAuc(p), Is.InRange(0.65, 0.95), "the stream has learnable signal but is not trivial");
    }

    /// <summary>Compares the two halves of a two-day stream (each half one full day, so the diurnal cycle is the
    /// same in both): click rate, the most exposed items, and the click rate per (segment, category).</summary>
    static (double CtrShift, double TopItemOverlap, double InterestShift, int NewItems) Halves(double drift)
    {
        const int events = 150_000;
        var config = Small with { Drift = drift, Seed = 21, EventsPerSecond = events / (2 * 86400.0) };
        var b = Generate(config, events);
        int half = b.Count / 2;
        var p = b.TrueProbabilities.ToArray();
        double Ctr(int from, int to) { double s = 0; for (int i = from; i < to; i++) s += p[i]; return s / (to - from); }
        HashSet<long> Top(int from, int to) => b.Indices(1)[from..to].ToArray().GroupBy(i => i)
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key).Take(50).Select(g => g.Key).ToHashSet();
        var topA = Top(0, half);
        var topB = Top(half, b.Count);
        double overlap = topA.Intersect(topB).Count() / 50.0;
        // Mean true probability per (segment, category) cell, weighted comparison across halves.
        int segments = config.Segments, categories = config.Categories;
        var sum = new double[2, segments * categories];
        var n = new int[2, segments * categories];
        for (int i = 0; i < b.Count; i++)
        {
            int h = i < half ? 0 : 1;
            int cell = (int)b.Indices(3)[i] * categories + (int)b.Indices(2)[i];
            sum[h, cell] += p[i]; n[h, cell]++;
        }
        double shift = 0; int cells = 0;
        for (int c = 0; c < segments * categories; c++)
            if (n[0, c] >= 30 && n[1, c] >= 30) { shift += Math.Abs(sum[0, c] / n[0, c] - sum[1, c] / n[1, c]); cells++; }
        int newItems = b.Indices(1).ToArray().Count(i => i >= config.InitialItems);
        return (Math.Abs(Ctr(0, half) - Ctr(half, b.Count)), overlap, shift / cells, newItems);
    }

    static readonly Lazy<(double CtrShift, double TopItemOverlap, double InterestShift, int NewItems)> Stationary = new(() => Halves(0));

    [Test]
    public void DriftZeroIsStationary()
    {
        var (ctrShift, overlap, interestShift, newItems) = Stationary.Value;
        TestContext.Out.WriteLine($"drift 0: ctr shift {ctrShift:F4}, top-50 overlap {overlap:F2}, interest shift {interestShift:F4}, new items {newItems}");
        Assert.That(newItems, Is.Zero);
        Assert.That(ctrShift, Is.LessThan(0.005));
        Assert.That(overlap, Is.GreaterThanOrEqualTo(0.7));
        Assert.That(interestShift, Is.LessThan(0.02));
    }

    [Test]
    public void DriftMovesPopularityInterestsAndBringsNewItems()
    {
        var (_, overlap, interestShift, newItems) = Halves(1);
        TestContext.Out.WriteLine($"drift 1: top-50 overlap {overlap:F2}, interest shift {interestShift:F4}, new items {newItems}");
        var stationary = Stationary.Value;
        Assert.That(newItems, Is.GreaterThan(1000));
        Assert.That(overlap, Is.LessThan(stationary.TopItemOverlap - 0.2));
        Assert.That(interestShift, Is.GreaterThan(2 * stationary.InterestShift));
    }

    [Test]
    public void ConfigAndBatchErrorsAreClear()
    {
        Assert.That(() => new SyntheticEventSource(Small with { Users = 0 }), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("Users"));
        Assert.That(() => new SyntheticEventSource(Small with { Drift = -1 }), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("Drift"));
        using var source = new SyntheticEventSource(Small, 10);
        var wrong = new EventBatch(TsvReaderTests.SmallSchema().Layout, 4);
        Assert.That(() => source.Read(wrong), Throws.ArgumentException);
    }
}

internal class SyntheticStreamWorldOptionTests
{
    static readonly SyntheticStreamConfig Small = new() { Users = 3000, InitialItems = 1500, MaxNewItems = 1000, EventsPerSecond = 5 };

    static EventBatch Generate(SyntheticStreamConfig config, long events)
    {
        using var source = new SyntheticEventSource(config, events);
        return EventBatchAssert.Drain(source, 4096);
    }

    [Test]
    public void HashedRowsAreTheSchemasHashOfTheSameWorldsIds()
    {
        const long rows = 1 << 17;
        var plain = Generate(Small with { Seed = 3 }, 20_000);
        var hashedConfig = Small with { Seed = 3, HashedRows = rows };
        var hashed = Generate(hashedConfig, 20_000);
        var schema = hashedConfig.Schema();
        // Same world and draws: every other column is identical; user/item rows are the schema's hash of the id.
        Assert.That(hashed.Labels.ToArray(), Is.EqualTo(plain.Labels.ToArray()));
        Assert.That(hashed.TrueProbabilities.ToArray(), Is.EqualTo(plain.TrueProbabilities.ToArray()));
        for (int f = 2; f < 6; f++) Assert.That(hashed.Indices(f).ToArray(), Is.EqualTo(plain.Indices(f).ToArray()));
        for (int f = 0; f < 2; f++)
        {
            var column = schema.Sparse[f];
            Assert.That(column.Mapping, Is.EqualTo(SparseMapping.Hash));
            Assert.That(column.Rows, Is.EqualTo(rows));
            var ids = plain.Indices(f);
            var got = hashed.Indices(f);
            for (int i = 0; i < ids.Length; i++)
            {
                var token = System.Text.Encoding.UTF8.GetBytes(ids[i].ToString(System.Globalization.CultureInfo.InvariantCulture));
                Assert.That(got[i], Is.EqualTo(SparseTokenMapper.HashRow(token, column.HashSeed, rows)), $"{column.Name} event {i}");
            }
            Assert.That(got.ToArray().Max(), Is.LessThan(rows));
            // Spread over the space: far more distinct rows than a table of one row per id would have.
            Assert.That(got.ToArray().Max(), Is.GreaterThan(ids.ToArray().Max()));
        }
    }

    [Test]
    public void HashedBurstyStreamReadsBackFromItsTsv()
    {
        string dir = Directory.CreateTempSubdirectory("ldlm-synth-hashed-").FullName;
        try
        {
            string tsv = Path.Combine(dir, "stream.tsv");
            var config = Small with { Seed = 9, HashedRows = 1 << 16, TrendBurstsPerHour = 30 };
            var summary = SyntheticStreamFiles.Write(tsv, config, 40_000);
            using var source = new TsvEventSource(tsv, StreamSchema.Load(summary.SchemaPath), new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
            EventBatchAssert.Equal(EventBatchAssert.Drain(source, 1000), Generate(config, 40_000), "TSV read back");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void TrendBurstsPutItemsInTheHeadWithAClickBoostThatDecays()
    {
        var config = Small with { Seed = 4, TrendBurstsPerHour = 20, TrendBurstBoost = 1.5, TrendBurstMinutes = 30 };
        const long events = 5 * 3600 * 5; // 5 h
        using var source = new SyntheticEventSource(config, events);
        var batch = EventBatchAssert.Drain(source, 4096);
        var bursts = source.RecentBursts.ToArray();
        TestContext.Out.WriteLine($"{source.BurstsStarted} bursts in 5 h");
        Assert.That(source.BurstsStarted, Is.InRange(90, 110)); // 20 per hour
        Assert.That(bursts.All(b => b.Tau >= 300 && b.Tau <= 4 * 1800));

        // For each burst: the item's share of traffic and its mean true probability in the first 10 minutes, against
        // the same item's events before its first burst (its normal self).
        var items = batch.Indices(1);
        var p = batch.TrueProbabilities;
        var ts = batch.Timestamps;
        double earlyShare = 0, earlyP = 0, beforeP = 0; int compared = 0, withBefore = 0;
        foreach (var (start, item, _) in bursts.Where(b => b.Start + 600 < 5 * 3600))
        {
            long t0 = config.StartTime + start;
            int inWindow = 0, onItem = 0; double sumP = 0;
            for (int i = 0; i < batch.Count; i++)
            {
                if (ts[i] < t0 || ts[i] >= t0 + 600) continue;
                inWindow++;
                if (items[i] == item) { onItem++; sumP += p[i]; }
            }
            if (onItem == 0) continue;
            compared++;
            earlyShare += (double)onItem / inWindow;
            earlyP += sumP / onItem;
            long firstBurst = bursts.Where(b => b.Item == item).Min(b => b.Start) + config.StartTime;
            double before = 0; int nBefore = 0;
            for (int i = 0; i < batch.Count && ts[i] < firstBurst; i++) if (items[i] == item) { before += p[i]; nBefore++; }
            if (nBefore >= 3) { beforeP += before / nBefore - sumP / onItem; withBefore++; }
        }
        earlyShare /= compared; earlyP /= compared;
        TestContext.Out.WriteLine($"{compared} bursts: traffic share in the first 10 min {earlyShare:P2}, mean p_true {earlyP:F3}, before−during {beforeP / Math.Max(1, withBefore):F3} over {withBefore}");
        Assert.That(compared, Is.GreaterThan(50));
        Assert.That(earlyShare, Is.GreaterThan(1.0 / 1500 * 3)); // a head rank, far above a uniform item's share
        Assert.That(earlyP, Is.GreaterThan(0.25));               // base rate ~0.12; boost 1.5 at the start
        Assert.That(beforeP / withBefore, Is.LessThan(-0.05));   // the same items clicked less before their burst

        // Drift 0 and rate 0 start none.
        using var still = new SyntheticEventSource(config with { Drift = 0 }, 20_000);
        EventBatchAssert.Drain(still, 4096);
        Assert.That(still.BurstsStarted, Is.Zero);
    }

    [Test]
    public void WorldOptionErrorsNameTheField()
    {
        Assert.That(() => new SyntheticEventSource(Small with { HashedRows = -1 }), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("HashedRows"));
        Assert.That(() => new SyntheticEventSource(Small with { TrendBurstsPerHour = -1 }), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("TrendBurstsPerHour"));
        Assert.That(() => new SyntheticEventSource(Small with { TrendBurstMinutes = 0 }), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("TrendBurstMinutes"));
    }
}
