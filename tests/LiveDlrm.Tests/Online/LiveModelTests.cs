using System.Diagnostics.Metrics;
using LiveDlrm.Online;

namespace LiveDlrm.Tests.Online;

internal class LiveModelTests
{
    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(true, true)]
    public void ServeScoresAreBitIdenticalToPredict(bool lastLayer, bool keepActivations)
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(reuse: keepActivations) with { AdaptLastLayer = lastLayer, LastLayerLearningRate = 0.5f },
                                          config: OnlineTestModel.DeepConfig());
        var batch = OnlineTestModel.Batch(48, 12);
        // Train a step first so the adapters (and the last layer) are not at their zero start.
        var first = new float[batch.Count];
        m.Live.Serve(batch, first);
        var taken = new List<ServedEvent>();
        for (int i = 0; i < batch.Count; i++)
        {
            Assert.That(m.Live.Ring.TryTake(batch.RequestIds[i], out var s), Is.True);
            s.Label = batch.Labels[i];
            taken.Add(s);
        }
        Assert.That(m.Trainer.TrainOn(taken), Is.True);
        Assert.That(taken.All(s => (s.Activations is not null) == keepActivations), Is.True, "activations kept exactly when reused");
        if (lastLayer) Assert.That(m.Live.LastLayer!.Current.Weight.ToArray().Any(w => w != 0), Is.True, "the last-layer update is nonzero");
        else Assert.That(m.Live.LastLayer, Is.Null);

        for (int i = 0; i < batch.Count; i++) batch.SetRequestId(i, 500 + i);
        var served = new float[batch.Count];
        m.Live.Serve(batch, served);
        var predicted = m.Model.Predict(batch);
        Assert.That(served.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(predicted.Select(BitConverter.SingleToInt32Bits)));
        Assert.That(served.Zip(first).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(0f), "the trained step reached both paths");
    }

    [Test]
    public void MeterListenerSeesTheTrainerRingAndAdapterInstruments()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(queue: 8, batch: 4), ringCapacity: 16);
        var meters = m.Live.Meters.ToHashSet();
        var totals = new Dictionary<string, long>();
        var tables = new Dictionary<string, HashSet<string>>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) => { if (meters.Contains(instrument.Meter)) l.EnableMeasurementEvents(instrument); },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            lock (totals)
            {
                bool gauge = instrument is ObservableGauge<long>;
                totals[instrument.Name] = gauge ? value : totals.GetValueOrDefault(instrument.Name) + value;
                foreach (var tag in tags)
                    if (tag.Key == "table") (tables.TryGetValue(instrument.Name, out var set) ? set : tables[instrument.Name] = []).Add((string)tag.Value!);
            }
        });
        listener.SetMeasurementEventCallback<int>((instrument, value, _, _) => { lock (totals) totals[instrument.Name] = value; });
        listener.Start();

        var batch = OnlineTestModel.Batch(20, 13, firstRequest: 100);   // 16-slot ring: 100..103 expire
        m.Live.Serve(batch, new float[batch.Count]);
        Assert.That(m.Live.Feedback(100, 1), Is.False, "expired");
        for (long id = 104; id < 120; id++) Assert.That(m.Live.Feedback(id, id % 2), Is.True);   // 8-event queue: 8 dropped
        m.Live.Start();
        m.Live.Drain(flush: true);
        m.Live.Stop();
        listener.RecordObservableInstruments();

        lock (totals)
        {
            Assert.That(totals.GetValueOrDefault("livedlrm.requests.stored"), Is.EqualTo(20));
            Assert.That(totals.GetValueOrDefault("livedlrm.requests.expired"), Is.EqualTo(4));
            Assert.That(totals.GetValueOrDefault("livedlrm.requests.joined"), Is.EqualTo(16));
            Assert.That(totals.GetValueOrDefault("livedlrm.requests.unknown_feedback"), Is.EqualTo(1));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.enqueued"), Is.EqualTo(16));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.drops"), Is.EqualTo(8));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.samples"), Is.EqualTo(8));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.steps"), Is.EqualTo(2));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.queue_length", -1), Is.EqualTo(0));
            Assert.That(totals.GetValueOrDefault("livedlrm.trainer.lag", -1), Is.EqualTo(0));
            Assert.That(tables["livedlrm.adapter.memory"], Is.EquivalentTo(new[] { "big", "mid" }), "one memory gauge per adapted table");
            Assert.That(tables["livedlrm.adapter.rank"], Is.EquivalentTo(new[] { "big", "mid" }));
            Assert.That(totals["livedlrm.adapter.rank"], Is.GreaterThan(0));
        }
        Assert.That(m.Trainer.Drops, Is.EqualTo(8), "the properties read the same counts");
        Assert.That(m.Live.Ring.Joined, Is.EqualTo(16));
    }

    [Test]
    public void BadLabelLeavesTheRequestWaiting()
    {
        using var m = new OnlineTestModel();
        m.Live.Serve(OnlineTestModel.Batch(2, 5), new float[2]);
        Assert.That(() => m.Live.Feedback(1, 2f), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("request 1"));
        Assert.That(m.Live.Feedback(1, 1f), Is.True, "the request was not consumed by the bad label");
    }

    [Test]
    public void TrainerRestartsAfterStopWithAFreshThrottle()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(queue: 64, batch: 4));
        var batch = OnlineTestModel.Batch(8, 14);
        var served = OnlineTestModel.Served(batch);
        m.Live.Start();
        m.Trainer.Throttle.SetDutyCycle(0.5);
        for (int i = 0; i < 4; i++) m.Trainer.Enqueue(served[i], batch.Labels[i]);
        m.Live.Drain();
        m.Live.Stop();
        Assert.That(m.Trainer.ThreadIds, Is.Empty);
        for (int i = 4; i < 8; i++) m.Trainer.Enqueue(served[i], batch.Labels[i]);
        Assert.That(m.Trainer.QueueLength, Is.EqualTo(4), "a stopped trainer keeps its queue");
        m.Live.Start();
        Assert.That(m.Trainer.Throttle.DutyCycle, Is.EqualTo(1.0));
        m.Live.Drain();
        Assert.That(m.Trainer.Steps, Is.EqualTo(2));
    }

    [Test]
    public void LastLayerNeedsATopMlpEndingInOneLogitAndFailsCleanly()
    {
        var config = new LiveDlrm.Model.DlrmConfig(3, [8, 8], [1], OnlineTestModel.Config().Tables);
        Assert.That(() => new OnlineTestModel(OnlineTestModel.Options() with { AdaptLastLayer = true }, config: config),
            Throws.ArgumentException.With.Message.Contains("AdaptLastLayer"));
    }
}
