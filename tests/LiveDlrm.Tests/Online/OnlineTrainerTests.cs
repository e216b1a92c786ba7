using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Metrics;
using LiveDlrm.Online;

namespace LiveDlrm.Tests.Online;

internal class OnlineTrainerTests
{
    [Test]
    public void AdaptersAreCreatedOnlyWhereTheBudgetHoldsRows()
    {
        using var m = new OnlineTestModel();
        Assert.That(m.Adapters[0], Is.Not.Null);
        Assert.That(m.Adapters[1], Is.Not.Null);
        Assert.That(m.Adapters[2], Is.Null, "a 3-row table's budget cannot hold an adapter");
        foreach (var a in m.Adapters.Where(a => a is not null)) Assert.That(a!.AllocatedBytes, Is.LessThanOrEqualTo(a.BudgetBytes));
    }

    [Test]
    public void ServingGoesThroughTheTrainedAdapters()
    {
        var logs = new List<string>();
        using var m = new OnlineTestModel(OnlineTestModel.Options() with { Logger = new ListLogger(logs) });
        var batch = OnlineTestModel.Batch(64, 1);
        for (int i = 0; i < 5; i++)
        {
            var served = OnlineTestModel.Served(batch);
            for (int e = 0; e < served.Count; e++) served[e].Label = batch.Labels[e];
            Assert.That(m.Trainer.TrainOn(served), Is.True, string.Join("\n", logs));
        }
        Assert.That(m.Adapters[0]!.ActiveRows, Is.GreaterThan(0));

        // The model's pooling (through the backend) must equal Σ effective rows W + A·B, computed row by row.
        int d = 8, b = batch.Count, tables = 3;
        var pooled = new float[tables * b * d];
        m.Model.Pool(batch, pooled);
        var row = new float[d];
        for (int t = 0; t < 2; t++)
        {
            var adapter = m.Adapters[t]!;
            for (int e = 0; e < b; e++)
            {
                var bag = batch.Bag(t, e);
                var expected = new float[d];
                foreach (long i in bag)
                {
                    adapter.ReadEffectiveRow(i, row);
                    for (int k = 0; k < d; k++) expected[k] += row[k];
                }
                if (m.Model.Config.Tables[t].Pooling == PoolingMode.Mean) for (int k = 0; k < d; k++) expected[k] /= bag.Length;
                for (int k = 0; k < d; k++)
                    Assert.That(pooled[(t * b + e) * d + k], Is.EqualTo(expected[k]).Within(1e-4f), $"table {t} event {e} dim {k}");
            }
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void TrainingLowersTheServedLoss(bool reuse)
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(reuse: reuse));
        var server = m.Live;
        var batch = OnlineTestModel.Batch(256, 2);
        var scores = new float[batch.Count];
        server.Serve(batch, scores);
        double before = BinaryMetrics.LogLoss(scores, batch.Labels);
        for (int round = 0; round < 15; round++)
        {
            for (int i = 0; i < batch.Count; i++) batch.SetRequestId(i, round * 1000 + i);
            server.Serve(batch, scores);
            var served = new List<ServedEvent>();
            for (int i = 0; i < batch.Count; i++)
            {
                Assert.That(server.Ring.TryTake(batch.RequestIds[i], out var s), Is.True);
                s.Label = batch.Labels[i];       // driven synchronously here, not through Enqueue
                served.Add(s);
            }
            for (int k = 0; k < served.Count; k += 16) Assert.That(m.Trainer.TrainOn(served.GetRange(k, 16)), Is.True);
            Assert.That(served[0].Pooled is not null, Is.EqualTo(reuse), "the ring keeps the serving forward only with reuse");
        }
        server.Serve(batch, scores);
        double after = BinaryMetrics.LogLoss(scores, batch.Labels);
        Assert.That(after, Is.LessThan(before - 0.05), $"logloss {before:F4} → {after:F4}");
    }

    [Test]
    public void ReuseAndFreshPoolingGiveTheSameFirstStep()
    {
        // With no update between serving and training, the kept forward equals a fresh one: same adapter after a step.
        var batch = OnlineTestModel.Batch(32, 3);
        float[] Run(bool reuse)
        {
            using var m = new OnlineTestModel(OnlineTestModel.Options(reuse: reuse));
            var server = m.Live;
            server.Serve(batch, new float[batch.Count]);
            var served = new List<ServedEvent>();
            for (int i = 0; i < batch.Count; i++)
            {
                server.Ring.TryTake(batch.RequestIds[i], out var s);
                s.Label = batch.Labels[i];
                served.Add(s);
            }
            Assert.That(m.Trainer.TrainOn(served), Is.True);
            var rows = new List<float>();
            var row = new float[8];
            for (long r = 0; r < 40; r++) { m.Adapters[0]!.ReadEffectiveRow(r, row); rows.AddRange(row); }
            return rows.ToArray();
        }
        var withReuse = Run(true);
        var without = Run(false);
        Assert.That(withReuse, Is.EqualTo(without).Within(1e-5f));
    }

    [Test]
    public void FeedbackJoinsByRequestIdAndCountsUnknownAndExpired()
    {
        using var m = new OnlineTestModel(ringCapacity: 4);
        var server = m.Live;
        var batch = OnlineTestModel.Batch(6, 4, firstRequest: 100);     // ids 100..105
        server.Serve(batch, new float[6]);
        Assert.That(server.Ring.Expired, Is.EqualTo(2), "ids 100 and 101 pushed out of a 4-slot ring");
        Assert.That(server.Ring.Count, Is.EqualTo(4));

        Assert.That(server.Feedback(100, 1), Is.False, "expired");
        Assert.That(server.Feedback(103, 1), Is.True);
        Assert.That(server.Feedback(103, 0), Is.False, "already joined");
        Assert.That(server.Feedback(999, 0), Is.False, "never served");
        Assert.That(server.Feedback(105, 0), Is.True);
        Assert.That(server.Ring.UnknownFeedback, Is.EqualTo(3));
        Assert.That(server.Ring.Joined, Is.EqualTo(2));
        Assert.That(m.Trainer.Enqueued, Is.EqualTo(2));
        Assert.That(m.Trainer.QueueLength, Is.EqualTo(2));
        Assert.That(server.Ring.Count, Is.EqualTo(2));
    }

    [Test]
    public void BadFeedbackLabelIsRejected()
    {
        using var m = new OnlineTestModel();
        var server = m.Live;
        server.Serve(OnlineTestModel.Batch(2, 5), new float[2]);
        Assert.That(() => server.Feedback(0, 0.5f), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("request 0"));
    }

    [Test]
    public void TrainerFallingBehindDropsOldestFirstAndCountsThem()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(queue: 8, batch: 4));
        var batch = OnlineTestModel.Batch(20, 6);
        var served = OnlineTestModel.Served(batch);
        // The trainer is not running yet: it is as far behind as it can be.
        for (int i = 0; i < served.Count; i++) m.Trainer.Enqueue(served[i], batch.Labels[i]);
        Assert.That(m.Trainer.Drops, Is.EqualTo(12));
        Assert.That(m.Trainer.QueueLength, Is.EqualTo(8));
        Assert.That(m.Trainer.LagSeconds, Is.EqualTo(batch.Timestamps[19] - batch.Timestamps[12]), "the 8 newest events wait");

        m.Trainer.Start();
        Assert.That(() => m.Trainer.ThreadIds.Count, Is.EqualTo(1).After(2000, 10));
        m.Trainer.Drain(flush: true);
        Assert.That(m.Trainer.SamplesProcessed, Is.EqualTo(8));
        Assert.That(m.Trainer.Steps, Is.EqualTo(2));
        Assert.That(m.Trainer.LagSeconds, Is.EqualTo(0));
        Assert.That(m.Trainer.CpuSeconds, Is.GreaterThan(0));
    }

    [Test]
    public void PausedTrainerDoesNotTrainUntilResumed()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(queue: 64, batch: 4));
        var batch = OnlineTestModel.Batch(8, 7);
        var served = OnlineTestModel.Served(batch);
        m.Trainer.Start();
        for (int i = 0; i < 4; i++) m.Trainer.Enqueue(served[i], batch.Labels[i]);
        m.Trainer.Drain();
        Assert.That(m.Trainer.Steps, Is.EqualTo(1));
        m.Trainer.Throttle.Pause();          // takes effect at the step boundary the thread is waiting at
        for (int i = 4; i < 8; i++) m.Trainer.Enqueue(served[i], batch.Labels[i]);
        Thread.Sleep(200);
        Assert.That(m.Trainer.Steps, Is.EqualTo(1), "a paused trainer must not step");
        m.Trainer.Throttle.Resume();
        m.Trainer.Drain();
        Assert.That(m.Trainer.Steps, Is.EqualTo(2));
    }

    [Test]
    public void NonFiniteStepIsDiscardedAndTheModelUnchanged()
    {
        var logs = new List<string>();
        using var m = new OnlineTestModel(OnlineTestModel.Options() with { Logger = new ListLogger(logs) });
        var batch = OnlineTestModel.Batch(16, 8);
        var before = Pool(m, batch);
        var b0 = m.Adapters[0]!.CopyB(out _);

        var served = OnlineTestModel.Served(batch);
        for (int i = 0; i < served.Count; i++) served[i].Label = batch.Labels[i];
        served[3].Dense[1] = float.NaN;      // one poisoned event poisons the whole batch's loss
        Assert.That(m.Trainer.TrainOn(served), Is.False);

        var poisonedPooled = OnlineTestModel.Served(batch);
        for (int i = 0; i < served.Count; i++) poisonedPooled[i].Label = batch.Labels[i];
        var withPooled = poisonedPooled.Select(s => new ServedEvent(s.RequestId, s.Timestamp, s.Dense, s.Bags, new float[3 * 8])).ToList();
        for (int i = 0; i < withPooled.Count; i++) withPooled[i].Label = batch.Labels[i];
        withPooled[0].Pooled![5] = float.PositiveInfinity;
        Assert.That(m.Trainer.TrainOn(withPooled), Is.False);

        Assert.That(m.Trainer.DiscardedSteps, Is.EqualTo(2));
        Assert.That(m.Adapters[0]!.ActiveRows, Is.EqualTo(0));
        Assert.That(m.Adapters[1]!.ActiveRows, Is.EqualTo(0));
        Assert.That(m.Adapters[0]!.CopyB(out _), Is.EqualTo(b0));
        Assert.That(Pool(m, batch), Is.EqualTo(before));
        Assert.That(logs, Has.Some.Contains("discarded"));
    }

    static float[] Pool(OnlineTestModel m, EventBatch batch)
    {
        var pooled = new float[3 * batch.Count * 8];
        m.Model.Pool(batch, pooled);
        return pooled;
    }
}
