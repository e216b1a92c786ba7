using LiveDlrm.Metrics;

namespace LiveDlrm.Tests.Metrics;

internal class BinaryMetricsTests
{
    [Test]
    public void AucOfAHandWorkedExample()
    {
        // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4 → 3 of 4.
        Assert.That(BinaryMetrics.Auc([0.1f, 0.4f, 0.35f, 0.8f], [0, 0, 1, 1]), Is.EqualTo(0.75));
    }

    [Test]
    public void TiesCountOneHalf()
    {
        // Positive 0.5 ties both negatives (½ + ½), positive 0.9 beats both (2): 3 of 4.
        Assert.That(BinaryMetrics.Auc([0.5f, 0.5f, 0.5f, 0.9f], [0, 1, 0, 1]), Is.EqualTo(0.75));
        Assert.That(BinaryMetrics.Auc([0.3f, 0.3f, 0.3f, 0.3f], [0, 1, 0, 1]), Is.EqualTo(0.5));
    }

    [Test]
    public void PerfectAndReversedRankings()
    {
        Assert.That(BinaryMetrics.Auc([0.1f, 0.2f, 0.8f, 0.9f], [0, 0, 1, 1]), Is.EqualTo(1.0));
        Assert.That(BinaryMetrics.Auc([0.9f, 0.8f, 0.2f, 0.1f], [0, 0, 1, 1]), Is.EqualTo(0.0));
    }

    [Test]
    public void AucIsNaNWithOneClassAndRejectsBadInput()
    {
        Assert.That(BinaryMetrics.Auc([0.1f, 0.2f], [1, 1]), Is.NaN);
        Assert.That(() => BinaryMetrics.Auc([0.1f], [1, 0]), Throws.ArgumentException);
        Assert.That(() => BinaryMetrics.Auc([float.NaN, 0.2f], [1, 0]), Throws.ArgumentException);
    }

    [Test]
    public void AucEqualsPairCountingOnRandomDataWithTies()
    {
        var rng = new Random(5);
        for (int trial = 0; trial < 20; trial++)
        {
            int n = rng.Next(2, 300);
            var s = Enumerable.Range(0, n).Select(_ => rng.Next(0, 20) / 20f).ToArray(); // many ties
            var y = Enumerable.Range(0, n).Select(_ => rng.NextDouble() < 0.3 ? 1f : 0f).ToArray();
            double won = 0; long pairs = 0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    if (y[i] == 1 && y[j] == 0) { pairs++; won += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0; }
            double expected = pairs == 0 ? double.NaN : won / pairs;
            Assert.That(BinaryMetrics.Auc(s, y), Is.EqualTo(expected).Within(1e-12), $"trial {trial}");
        }
    }

    [Test]
    public void LogLossOfAHandWorkedExample()
    {
        // -(ln 0.9 + ln 0.8) / 2
        Assert.That(BinaryMetrics.LogLoss([0.9f, 0.2f], [1, 0]), Is.EqualTo((0.1053605156578263 + 0.2231435513142097) / 2).Within(1e-7));
    }

    [Test]
    public void LogLossClipsCertainMistakes()
    {
        Assert.That(BinaryMetrics.LogLoss([0f], [1]), Is.EqualTo(-Math.Log(1e-7)).Within(1e-9));
        Assert.That(BinaryMetrics.LogLoss([1f], [0]), Is.EqualTo(-Math.Log(1e-7)).Within(1e-6));
        Assert.That(BinaryMetrics.LogLoss([1f, 0f], [1, 0]), Is.EqualTo(-Math.Log(1 - 1e-7)).Within(1e-12));
    }

    [Test]
    public void CalibrationIsMeanPredictionOverClickRate()
    {
        Assert.That(BinaryMetrics.Calibration([0.2f, 0.4f], [1, 0]), Is.EqualTo(0.6).Within(1e-7));
        Assert.That(BinaryMetrics.Calibration([0.25f, 0.25f, 0.25f, 0.25f], [1, 0, 0, 0]), Is.EqualTo(1.0));
        Assert.That(BinaryMetrics.Calibration([0.2f], [0]), Is.NaN);
    }

    [Test]
    public void ExpectedAucEqualsThePairFormula()
    {
        var rng = new Random(8);
        var p = Enumerable.Range(0, 60).Select(_ => rng.Next(0, 12) / 11f).ToArray();
        double num = 0, den = 0;
        for (int i = 0; i < p.Length; i++)
            for (int j = 0; j < p.Length; j++)
            {
                if (i == j) continue;
                double w = p[i] * (1.0 - p[j]);
                den += w;
                num += p[i] > p[j] ? w : p[i] == p[j] ? 0.5 * w : 0;
            }
        Assert.That(BinaryMetrics.ExpectedAuc(p), Is.EqualTo(num / den).Within(1e-12));
        Assert.That(BinaryMetrics.ExpectedAuc([0f, 0f, 1f, 1f]), Is.EqualTo(1.0));
        Assert.That(BinaryMetrics.ExpectedAuc([0.5f]), Is.NaN);
    }

    [Test]
    public void AccumulatorMatchesTheSpanFunctionsAndResets()
    {
        var rng = new Random(3);
        var s = Enumerable.Range(0, 1000).Select(_ => (float)rng.NextDouble()).ToArray();
        var y = s.Select(x => rng.NextDouble() < x ? 1f : 0f).ToArray();
        var acc = new MetricAccumulator(initialCapacity: 16); // forces growth
        acc.Add(s.AsSpan(0, 500), y.AsSpan(0, 500));
        for (int i = 500; i < 1000; i++) acc.Add(s[i], y[i]);
        var m = acc.Summary();
        Assert.That(m.Events, Is.EqualTo(1000));
        Assert.That(m.Auc, Is.EqualTo(BinaryMetrics.Auc(s, y)));
        Assert.That(m.LogLoss, Is.EqualTo(BinaryMetrics.LogLoss(s, y)).Within(1e-12));
        Assert.That(m.Calibration, Is.EqualTo(BinaryMetrics.Calibration(s, y)).Within(1e-12));
        Assert.That(acc.Auc(), Is.EqualTo(m.Auc), "AUC on demand does not disturb the stored window");

        acc.Reset();
        acc.Add([0.1f, 0.4f, 0.35f, 0.8f], [0, 0, 1, 1]);
        Assert.That(acc.Summary().Auc, Is.EqualTo(0.75));
        Assert.That(acc.Count, Is.EqualTo(4));
    }
}

internal class WindowedMetricsTests
{
    [Test]
    public void SplitsByAlignedEventTimeWindowsAndKeepsOverallMetrics()
    {
        // Window 3600 s: events at 3599 (window 0), 3600..7199 (window 1), 10800 (window 3; window 2 is empty).
        long[] ts = [100, 3599, 3600, 5000, 7000, 7199, 10800, 10801];
        float[] s = [0.1f, 0.9f, 0.1f, 0.4f, 0.35f, 0.8f, 0.3f, 0.6f];
        float[] y = [0, 1, 0, 0, 1, 1, 1, 0];
        float[] p = [0.2f, 0.7f, 0.1f, 0.2f, 0.3f, 0.9f, 0.4f, 0.5f];
        var w = new WindowedMetrics(3600);
        w.Add(ts.AsSpan(0, 3), s.AsSpan(0, 3), y.AsSpan(0, 3), p.AsSpan(0, 3));
        w.Add(ts.AsSpan(3), s.AsSpan(3), y.AsSpan(3), p.AsSpan(3));
        w.Finish();
        w.Finish();
        Assert.That(w.Windows.Select(x => (x.Start, x.End, x.Events)), Is.EqualTo(new[] { (0L, 3600L, 2L), (3600L, 7200L, 4L), (10800L, 14400L, 2L) }));
        Assert.That(w.Windows[0].Metrics.Auc, Is.EqualTo(1.0));
        // Window 1 is the hand-worked AUC example: scores 0.1, 0.4 negative; 0.35, 0.8 positive → 0.75.
        Assert.That(w.Windows[1].Metrics.Auc, Is.EqualTo(0.75));
        Assert.That(w.Windows[1].OptimumAuc, Is.EqualTo(1.0));
        Assert.That(w.Windows[2].Metrics.Auc, Is.EqualTo(0.0));
        Assert.That(w.Overall.Events, Is.EqualTo(8));
        Assert.That(w.Overall.Auc, Is.EqualTo(BinaryMetrics.Auc(s, y)));
        Assert.That(w.OverallOptimumAuc, Is.EqualTo(BinaryMetrics.Auc(p, y)));
        Assert.That(w.LateEvents, Is.Zero);
    }

    [Test]
    public void LateEventsCountInTheOpenWindowAndNoProbabilitiesMeansNoOptimum()
    {
        var w = new WindowedMetrics(10);
        w.Add([5, 15, 12, 3], [0.2f, 0.6f, 0.3f, 0.9f], [0, 1, 0, 1]);
        w.Finish();
        Assert.That(w.Windows.Select(x => x.Events), Is.EqualTo(new[] { 1L, 3L }));
        Assert.That(w.LateEvents, Is.EqualTo(1));
        Assert.That(w.Windows[1].OptimumAuc, Is.NaN);
        Assert.That(() => w.Add([1], [0.5f, 0.5f], [1]), Throws.ArgumentException);
    }
}
