using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>The per-table prefetch distance: exploration turns over every candidate, the fastest (by its best sample)
/// chosen, chosen again in the next round, small lookups never timed.</summary>
[TestFixture]
internal class PrefetchTunerTests
{
    const int Big = PrefetchTuner.MinTimedLookups;

    /// <summary>One exploration round with the given cost per lookup for each candidate distance (plus, for every
    /// sample but one, a large random delay: the choice must rest on each candidate's best sample). Returns the
    /// distances handed out during the round.</summary>
    static List<int> Round(PrefetchTuner tuner, Func<int, double> costOf, Random rng)
    {
        var handedOut = new List<int>();
        for (int i = 0; i < PrefetchTuner.SamplesPerCandidate * PrefetchTuner.Candidates.Length; i++)
        {
            int d = tuner.Next(Big, out int candidate);
            Assert.That(candidate, Is.GreaterThanOrEqualTo(0), "an exploration turn");
            Assert.That(d, Is.EqualTo(PrefetchTuner.Candidates[candidate]));
            handedOut.Add(d);
            double noise = i < PrefetchTuner.Candidates.Length ? 0 : rng.NextDouble() * 5;   // each candidate's first sample is clean
            tuner.Record(candidate, (long)((costOf(d) + noise) * 1000 * Big), Big);
        }
        return handedOut;
    }

    [Test]
    public void ExploresEveryCandidateAndKeepsTheFastest()
    {
        var rng = new Random(3);
        var tuner = new PrefetchTuner(initialDistance: 16);
        Assert.That(tuner.Chosen, Is.EqualTo(16));
        var first = Round(tuner, d => d == 32 ? 1.0 : 2.0 + d / 100.0, rng);
        Assert.That(first.Distinct().Order(), Is.EqualTo(PrefetchTuner.Candidates.Order()));
        Assert.That(first.GroupBy(d => d).Select(g => g.Count()), Is.All.EqualTo(PrefetchTuner.SamplesPerCandidate));
        for (int i = 0; i < PrefetchTuner.ExploitCalls; i++)
        {
            Assert.That(tuner.Next(Big, out int candidate), Is.EqualTo(32));
            Assert.That(candidate, Is.EqualTo(-1), "not timed while exploiting");
        }
        // The next round finds that the traffic changed: 8 is now the fastest.
        Round(tuner, d => d == 8 ? 1.0 : 3.0, rng);
        Assert.That(tuner.Next(Big, out _), Is.EqualTo(8));
        Assert.That(tuner.Chosen, Is.EqualTo(8));
    }

    [Test]
    public void SmallLookupsAreNeverTimedAndUseTheChosenDistance()
    {
        var tuner = new PrefetchTuner(initialDistance: 0);
        for (int i = 0; i < 100; i++)
        {
            Assert.That(tuner.Next(Big - 1, out int candidate), Is.EqualTo(0));
            Assert.That(candidate, Is.EqualTo(-1));
        }
    }

    /// <summary>Through the public lookup: a table's distance moves off its storage default only to a candidate,
    /// and every lookup of the exploration round (each at another distance) equals the reference.</summary>
    [Test]
    public void TunedLookupsStayExact()
    {
        using var table = EmbeddingTestData.RandomTable("tuned", 3000, 64, EmbeddingStorage.Fp16, seed: 4);
        var (indices, offsets, _) = EmbeddingTestData.RandomBatch(table.Rows, bags: 400, maxPooling: 40, seed: 5);
        Assert.That(indices.Length, Is.GreaterThanOrEqualTo(Big));
        var expected = EmbeddingTestData.Reference(table, indices, offsets, [], PoolingMode.Sum);
        var output = new float[400 * 64];
        using var pool = new EmbeddingWorkerPool(1);
        for (int i = 0; i < PrefetchTuner.SamplesPerCandidate * PrefetchTuner.Candidates.Length + 3; i++)
        {
            EmbeddingBag.Forward(table, indices, offsets, output, PoolingMode.Sum, default, pool);
            EmbeddingTestData.AssertClose(expected, output, 64, 1e-5, $"lookup {i} at distance {table.PrefetchDistance}");
        }
        Assert.That(PrefetchTuner.Candidates, Does.Contain(table.PrefetchDistance));
    }
}
