namespace LiveDlrm.Tests.Online;

/// <summary><c>OnlineTrainerOptions.TrainFraction</c>: serving keeps only the sampled requests in the ring and the
/// label join takes only theirs, by the same request-id hash, so nothing is counted as unknown feedback; every
/// request is still served.</summary>
internal class TrainFractionTests
{
    [Test]
    public void AFractionOfRequestsIsKeptAndTrainedOnAndNoneIsUnknown()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options(batch: 16, queue: 4096) with { TrainFraction = 0.25 }, ringCapacity: 1 << 14);
        m.Live.Start();
        var scores = new float[256];
        int joined = 0, sampled = 0;
        for (int round = 0; round < 8; round++)
        {
            long first = 1 + round * 256L;
            var batch = OnlineTestModel.Batch(256, 20 + round, first);
            m.Live.Serve(batch, scores);
            Assert.That(scores.All(float.IsFinite), "every request is served");
            for (int i = 0; i < 256; i++)
            {
                if (m.Live.Options.Trainer.Trains(first + i)) sampled++;
                if (m.Live.Feedback(first + i, i % 4 == 0 ? 1f : 0f)) joined++;
            }
        }
        m.Live.Drain(flush: true);
        m.Live.Stop();
        Assert.That(joined, Is.EqualTo(sampled), "exactly the sampled requests join");
        Assert.That(sampled, Is.InRange(2048 * 0.25 - 100, 2048 * 0.25 + 100), "about a quarter of 2048 requests");
        Assert.That(m.Live.Ring.Stored, Is.EqualTo(sampled), "only sampled requests are kept");
        Assert.That(m.Live.Ring.UnknownFeedback, Is.EqualTo(0));
        Assert.That(m.Trainer.SamplesProcessed, Is.EqualTo(sampled));
    }

    [Test]
    public void AFractionOutsideZeroToOneIsRefused()
    {
        Assert.That(() => (OnlineTestModel.Options() with { TrainFraction = 0 }).Validate(), Throws.TypeOf<ArgumentOutOfRangeException>());
        Assert.That(() => (OnlineTestModel.Options() with { TrainFraction = 1.5 }).Validate(), Throws.TypeOf<ArgumentOutOfRangeException>());
    }
}
