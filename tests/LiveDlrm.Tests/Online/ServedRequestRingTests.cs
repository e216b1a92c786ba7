using LiveDlrm.Data;
using LiveDlrm.Online;

namespace LiveDlrm.Tests.Online;

internal class ServedRequestRingTests
{
    const int Dim = 8, Tables = 3, ActivationLength = 5;

    /// <summary>Events with bag lengths that vary by event and by <paramref name="seed"/>, so a refilled event meets
    /// bags both of its previous length and of another.</summary>
    static EventBatch Batch(int count, int seed, long firstRequest)
    {
        var random = new Random(seed);
        var batch = new EventBatch(OnlineTestModel.Layout(), count, 3);
        for (int e = 0; e < count; e++)
        {
            int row = batch.AddEvent(random.Next(2), 5000 + seed * 100 + e, firstRequest + e);
            var d = batch.DenseRowForWrite(row);
            for (int k = 0; k < d.Length; k++) d[k] = (float)random.NextDouble();
            for (int t = 0; t < Tables; t++)
                for (int n = random.Next(4); n > 0; n--) batch.AddIndex(t, random.Next(3));
        }
        return batch;
    }

    static float[] Floats(int n, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)random.NextDouble()).ToArray();
    }

    static void AssertHolds(ServedEvent actual, EventBatch batch, int row, float[] pooled, float[] activations)
    {
        var expected = ServedEvent.FromBatch(batch, row, pooled, Dim, activations.AsSpan(row * ActivationLength, ActivationLength));
        Assert.That(actual.RequestId, Is.EqualTo(expected.RequestId));
        Assert.That(actual.Timestamp, Is.EqualTo(expected.Timestamp));
        Assert.That(actual.Label, Is.NaN, "a refilled event carries no label until its feedback");
        Assert.That(actual.Dense, Is.EqualTo(expected.Dense));
        Assert.That(actual.Bags.Length, Is.EqualTo(Tables));
        for (int t = 0; t < Tables; t++) Assert.That(actual.Bags[t], Is.EqualTo(expected.Bags[t]), $"request {actual.RequestId} table {t}");
        Assert.That(actual.Pooled, Is.EqualTo(expected.Pooled));
        Assert.That(actual.Activations, Is.EqualTo(expected.Activations));
    }

    [Test]
    public void RecycledEventsAreRefilledWithExactlyTheirNewRequest()
    {
        using var ring = new ServedRequestRing(16);
        var first = Batch(10, 1, firstRequest: 0);
        var pooled1 = Floats(Tables * 10 * Dim, 11);
        var act1 = Floats(10 * ActivationLength, 12);
        ring.Store(first, pooled1, Dim, act1, ActivationLength);
        var taken = new List<ServedEvent>();
        for (int i = 0; i < 10; i++)
        {
            Assert.That(ring.TryTake(i, out var s), Is.True);
            AssertHolds(s, first, i, pooled1, act1);
            s.Label = 1;
            taken.Add(s);
        }
        ring.Recycle(taken);
        ring.Recycle(taken[0]);   // a second hand-back of the same event is ignored
        ring.Recycle(ServedEvent.FromBatch(first, 0, pooled1, Dim, act1.AsSpan(0, ActivationLength)));   // not the ring's
        Assert.That(ring.FreeCount, Is.EqualTo(10));

        var second = Batch(10, 2, firstRequest: 100);
        var pooled2 = Floats(Tables * 10 * Dim, 21);
        var act2 = Floats(10 * ActivationLength, 22);
        ring.Store(second, pooled2, Dim, act2, ActivationLength);
        Assert.That(ring.EventsAllocated, Is.EqualTo(10), "the second batch reused the ten trained events");
        Assert.That(ring.FreeCount, Is.EqualTo(0));
        for (int i = 0; i < 10; i++)
        {
            Assert.That(ring.TryTake(100 + i, out var s), Is.True);
            Assert.That(taken, Does.Contain(s));
            AssertHolds(s, second, i, pooled2, act2);
        }
        Assert.That(ring.TryTake(3, out _), Is.False, "a recycled request is gone");
    }

    [Test]
    public void EvictedForgottenAndReplacedEventsAreReusedAndCounted()
    {
        using var ring = new ServedRequestRing(4);
        var batch = Batch(6, 3, firstRequest: 0);      // ids 0..5 into 4 slots: 0 and 1 expire
        ring.Store(batch, default, Dim, default, 0);
        Assert.That(ring.Expired, Is.EqualTo(2));
        Assert.That(ring.FreeCount, Is.EqualTo(2), "the expired events went to the free list");
        Assert.That(ring.Forget(4), Is.True);
        Assert.That(ring.Forget(4), Is.False, "already forgotten");
        Assert.That(ring.FreeCount, Is.EqualTo(3));
        var again = Batch(2, 4, firstRequest: 5);      // ids 5 (stored twice: replaces the first) and 6
        ring.Store(again, default, Dim, default, 0);
        Assert.That(ring.EventsAllocated, Is.EqualTo(6), "both reused free events");
        Assert.That(ring.TryTake(5, out var five), Is.True);
        Assert.That(five.Dense, Is.EqualTo(again.DenseRow(0).ToArray()), "the second store of id 5 replaced the first");
        Assert.That(five.Pooled, Is.Null);
        Assert.That(five.Activations, Is.Null);
        Assert.That(ring.TryTake(5, out _), Is.False);
        Assert.That(ring.Stored, Is.EqualTo(8));
        Assert.That(ring.UnknownFeedback, Is.EqualTo(2));
    }

    [Test]
    public void ALiveModelStopsAllocatingEventsOnceWarm()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(batch: 16) with { AdaptLastLayer = true }, config: OnlineTestModel.DeepConfig());
        m.Live.Start();
        for (int round = 0; round < 20; round++)
        {
            var batch = OnlineTestModel.Batch(32, round, firstRequest: round * 32);
            m.Live.Serve(batch, new float[batch.Count]);
            for (int i = 0; i < batch.Count; i++) Assert.That(m.Live.Feedback(batch.RequestIds[i], batch.Labels[i]), Is.True);
            m.Live.Drain(flush: true);
        }
        m.Live.Stop();
        Assert.That(m.Trainer.SamplesProcessed, Is.EqualTo(20 * 32));
        Assert.That(m.Trainer.DiscardedSteps, Is.EqualTo(0));
        Assert.That(m.Live.Ring.Stored, Is.EqualTo(20 * 32));
        Assert.That(m.Live.Ring.EventsAllocated, Is.EqualTo(32), "after the first batch every request reused a trained event");
    }
}
