using System.Diagnostics.Metrics;
using LiveDlrm.Serving.Qos;

namespace LiveDlrm.Tests.Serving;

/// <summary>The GC pause histogram: every induced collection is one pause, measured from the runtime's own events.</summary>
internal class GcPauseListenerTests
{
    [Test]
    public void CountsInducedCollectionsAsPauses()
    {
        using var meter = new Meter("LiveDlrm.Tests.GcPauses");
        var histogram = meter.CreateHistogram<double>("pauses", unit: "s");
        var recorded = new List<double>();
        using var meterListener = new MeterListener();
        meterListener.InstrumentPublished = (i, l) => { if (ReferenceEquals(i, histogram)) l.EnableMeasurementEvents(i); };
        meterListener.SetMeasurementEventCallback<double>((_, v, _, _) => { lock (recorded) recorded.Add(v); });
        meterListener.Start();
        using var pauses = new GcPauseListener(histogram);
        // Runtime events reach a listener asynchronously: collect until the first pause arrives, then a known number more.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (pauses.Count == 0 && DateTime.UtcNow < deadline) { GC.Collect(0); Thread.Sleep(50); }
        Assert.That(pauses.Count, Is.GreaterThan(0), "no GC pause seen");
        long before = pauses.Count;
        for (int i = 0; i < 3; i++) GC.Collect(0, GCCollectionMode.Forced, blocking: true);
        while (pauses.Count < before + 3 && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.That(pauses.Count, Is.GreaterThanOrEqualTo(before + 3));
        Assert.That(pauses.Total, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(pauses.TakeMax(), Is.GreaterThan(TimeSpan.Zero).And.LessThan(TimeSpan.FromSeconds(10)));
        lock (recorded) Assert.That(recorded, Has.Count.GreaterThanOrEqualTo(before + 3).And.All.GreaterThan(0.0));
    }
}
