using LiveDlrm.Data;
using LiveDlrm.Metrics;

namespace LiveDlrm.Tests.Data;

internal class VisitStreamTests
{
    static (EventBatch Batch, int Read) ReadAll(VisitEventSource source, int events)
    {
        var batch = new EventBatch(source.Schema.Layout, events + 1);
        return (batch, source.Read(batch));
    }

    [Test]
    public void IdOnlyTimeOrderedLongSpanWithVisitsAndItemsBornOverTime()
    {
        var config = new VisitStreamConfig { Seed = 4, Users = 2_000, InitialItems = 300, NewItems = 1_200 };
        const int events = 20_000;
        using var source = new VisitEventSource(config, events);
        Assert.That(source.Schema.Layout.DenseCount, Is.Zero);
        var (batch, read) = ReadAll(source, events);
        Assert.That(read, Is.EqualTo(events));
        var ts = batch.Timestamps.ToArray();
        for (int i = 1; i < ts.Length; i++) Assert.That(ts[i], Is.GreaterThanOrEqualTo(ts[i - 1]));
        Assert.That((ts[^1] - ts[0]) / 31_556_952.0, Is.InRange(19.0, 20.0), "spread over the 20-year span");
        // Visits: many consecutive events of one user a visit gap apart.
        int sameUserNext = Enumerable.Range(1, read - 1).Count(i => batch.Bag(0, i)[0] == batch.Bag(0, i - 1)[0] && ts[i] - ts[i - 1] == config.SecondsBetweenVisitEvents);
        Assert.That(sameUserNext, Is.GreaterThan(read / 2));
        // No event on an item before its birth (born evenly over the span), and the catalogue grows: the last tenth
        // of the stream shows more distinct items than the first.
        var items = Enumerable.Range(0, read).Select(i => batch.Bag(1, i)[0]).ToArray();
        double span = config.SpanYears * 31_556_952;
        for (int i = 0; i < read; i++)
            if (items[i] >= 300) Assert.That(ts[i], Is.GreaterThanOrEqualTo(config.StartTime + (long)(span * (items[i] - 300 + 1) / 1_201)), $"event {i}");
        int first = items.Take(read / 10).Distinct().Count(), last = items.Skip(read * 9 / 10).Distinct().Count();
        TestContext.Out.WriteLine($"distinct items: first tenth {first}, last tenth {last}");
        Assert.That(last, Is.GreaterThan(first));
        var p = batch.TrueProbabilities.ToArray();
        Assert.That(p.All(x => x > 0 && x < 1), Is.True);
        double optimum = BinaryMetrics.Auc(p, batch.Labels);
        TestContext.Out.WriteLine($"click rate {batch.Labels.ToArray().Average():F3}, optimum AUC {optimum:F4}");
        Assert.That(optimum, Is.InRange(0.65, 0.85));

        source.Reset();
        var (again, _) = ReadAll(source, events);
        Assert.That(again.Labels.ToArray(), Is.EqualTo(batch.Labels.ToArray()));
        Assert.That(again.Indices(1).ToArray(), Is.EqualTo(batch.Indices(1).ToArray()));
    }
}
