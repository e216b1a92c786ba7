using LiveDlrm.Data;
using LiveDlrm.Metrics;

namespace LiveDlrm.Tests.Data;

public class SyntheticStreamTests
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
