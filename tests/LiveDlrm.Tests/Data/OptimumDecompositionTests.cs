using LiveDlrm.Data;
using LiveDlrm.Metrics;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Data;

/// <summary>What part of the optimum a learner can get from the data: the held-out events of the stationary world
/// (events 300 000–400 000, `train`'s split in docs/model.md) scored by the generator's click model with terms left out.</summary>
internal class OptimumDecompositionTests
{
    static double Auc(SyntheticTerms omit, out double userShare)
    {
        var source = new SyntheticEventSource(new SyntheticStreamConfig { Drift = 0 }, 400_000) { OmitFromTrueProbability = omit };
        var batch = new EventBatch(source.Schema.Layout, 4096, 2);
        var seen = new Dictionary<long, int>();
        long read = 0, fewEvents = 0;
        var metrics = new MetricAccumulator();
        while (source.Read(batch) > 0)
        {
            var users = batch.Indices(0);
            for (int i = 0; i < batch.Count; i++, read++)
            {
                long user = users[i];
                if (read < 300_000) seen[user] = seen.GetValueOrDefault(user) + 1;
                else if (seen.GetValueOrDefault(user) < 20) fewEvents++;
            }
            if (read > 300_000)
            {
                int first = (int)Math.Max(0, batch.Count - (read - 300_000));
                metrics.Add(batch.TrueProbabilities[first..], batch.Labels[first..]);
            }
        }
        userShare = fewEvents / 100_000.0;
        return metrics.Auc();
    }

    [Test]
    public void EachTermLeftOutLowersTheHeldOutCeiling()
    {
        double full = Auc(SyntheticTerms.None, out double fewShare);
        double noUser = Auc(SyntheticTerms.UserDeviation, out _);
        double noDeviations = Auc(SyntheticTerms.UserDeviation | SyntheticTerms.ItemDeviation, out _);
        double noItem = Auc(SyntheticTerms.UserDeviation | SyntheticTerms.ItemDeviation | SyntheticTerms.ItemBias, out _);
        TestContext.Out.WriteLine($"held-out AUC of the click model: full {full:F4}; without user deviations {noUser:F4}; " +
                                  $"also without item deviations {noDeviations:F4}; also without item biases {noItem:F4}; " +
                                  $"held-out events from users with < 20 training events: {fewShare:P0}");
        Assert.That(noUser, Is.LessThan(full - 0.005));
        Assert.That(noDeviations, Is.LessThan(noUser - 0.005));
        Assert.That(noItem, Is.LessThan(noDeviations - 0.005));
        Assert.That(fewShare, Is.GreaterThan(0.5), "most held-out users have too few events to learn their deviation");
    }
}
