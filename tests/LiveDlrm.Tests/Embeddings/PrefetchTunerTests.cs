using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>The per-table prefetch distance: after a warm-up, exploration rounds over every candidate, the candidate with the lowest
/// median time relative to its round's fastest chosen, chosen again in the next rounds, small lookups never timed.</summary>
[TestFixture]
internal class PrefetchTunerTests
{
    const int Big = PrefetchTuner.MinTimedLookups;

    /// <summary>One exploration cycle with the given cost per lookup for each candidate distance. Every round runs
    /// under its own host slowdown (a factor of 1–6 on all its turns, as a burst of background load) and one turn
    /// of every round but the first is hit by a further spike (preemption: up to 10x): the choice must rest on
    /// within-round comparisons and be robust to one outlier per round. <paramref name="skip"/> turns are not
    /// recorded (a lookup the busy pool left to one thread). Returns the distances handed out.</summary>
    static List<int> Explore(PrefetchTuner tuner, Func<int, double> costOf, Random rng, Func<int, bool>? skip = null)
    {
        var handedOut = new List<int>();
        int n = PrefetchTuner.Candidates.Length;
        double slowdown = 1;
        int spiked = -1;
        for (int i = 0; i < PrefetchTuner.ExploreCalls; i++)
        {
            if (i % n == 0)
            {
                slowdown = 1 + rng.NextDouble() * 5;
                spiked = i == 0 ? -1 : i + rng.Next(n);
            }
            int d = tuner.Next(Big, out int turn);
            Assert.That(turn, Is.EqualTo(i), "an exploration turn");
            Assert.That(d, Is.EqualTo(PrefetchTuner.Candidates[PrefetchTuner.CandidateOf(turn)]));
            handedOut.Add(d);
            if (skip?.Invoke(i) == true) continue;
            double cost = costOf(d) * slowdown * (i == spiked ? 1 + rng.NextDouble() * 9 : 1);
            tuner.Record(turn, (long)(cost * 1000 * Big), Big);
        }
        return handedOut;
    }

    /// <summary>The lookups before the first exploration: not timed, at the distance in use.</summary>
    static void WarmUp(PrefetchTuner tuner)
    {
        for (int i = 0; i < PrefetchTuner.WarmupCalls; i++)
        {
            Assert.That(tuner.Next(Big, out int turn), Is.EqualTo(tuner.Chosen));
            Assert.That(turn, Is.EqualTo(-1), "not timed while warming up");
        }
    }

    [Test]
    public void EveryRoundTimesEveryCandidateOnceInAChangingOrder()
    {
        int n = PrefetchTuner.Candidates.Length;
        var openers = new HashSet<int>();
        var predecessors = Enumerable.Range(0, n).Select(_ => new HashSet<int>()).ToArray();
        for (int r = 0; r < PrefetchTuner.Rounds; r++)
        {
            var inRound = Enumerable.Range(r * n, n).Select(PrefetchTuner.CandidateOf).ToList();
            Assert.That(inRound.Order(), Is.EqualTo(Enumerable.Range(0, n)), $"round {r}");
            openers.Add(inRound[0]);
            for (int k = 1; k < n; k++) predecessors[inRound[k]].Add(inRound[k - 1]);
        }
        Assert.That(openers, Has.Count.EqualTo(n), "every candidate opens a round");
        for (int c = 0; c < n; c++)
            Assert.That(predecessors[c], Has.Count.GreaterThanOrEqualTo(3), $"candidate {c} follows several others");
    }

    [Test]
    public void ExploresEveryCandidateAndKeepsTheFastest()
    {
        var rng = new Random(3);
        var tuner = new PrefetchTuner(initialDistance: 16);
        Assert.That(tuner.Chosen, Is.EqualTo(16));
        WarmUp(tuner);
        // 32 is only 5 % faster than the next candidate, well inside the spread of the slowdowns between rounds.
        Assert.That(tuner.LastScores, Is.All.NaN);
        var first = Explore(tuner, d => d == 32 ? 1.0 : 1.05 + d / 1000.0, rng);
        Assert.That(first.Distinct().Order(), Is.EqualTo(PrefetchTuner.Candidates.Order()));
        Assert.That(first.GroupBy(d => d).Select(g => g.Count()), Is.All.EqualTo(PrefetchTuner.Rounds));
        for (int i = 0; i < PrefetchTuner.ExploitCalls; i++)
        {
            Assert.That(tuner.Next(Big, out int turn), Is.EqualTo(32));
            Assert.That(turn, Is.EqualTo(-1), "not timed while exploiting");
        }
        Assert.That(tuner.LastScores[Array.IndexOf(PrefetchTuner.Candidates, 32)], Is.EqualTo(1.0).Within(1e-9));
        // The next cycle finds that the traffic changed: 8 is now the fastest.
        Explore(tuner, d => d == 8 ? 1.0 : 1.05, rng);
        Assert.That(tuner.Next(Big, out _), Is.EqualTo(8));
        Assert.That(tuner.Chosen, Is.EqualTo(8));
    }

    /// <summary>Rounds with a turn that was not timed are left out; the complete ones still decide.</summary>
    [Test]
    public void IncompleteRoundsAreSkipped()
    {
        var rng = new Random(5);
        var tuner = new PrefetchTuner(initialDistance: 0);
        WarmUp(tuner);
        int n = PrefetchTuner.Candidates.Length;
        // Every round but the last loses one turn: the last round alone decides.
        Explore(tuner, d => d == 16 ? 1.0 : 1.1, rng, skip: i => i / n < PrefetchTuner.Rounds - 1 && i % n == 0);
        tuner.Next(Big, out _);
        Assert.That(tuner.Chosen, Is.EqualTo(16));
        // No complete round at all: the distance in use stays.
        for (int i = 0; i < PrefetchTuner.ExploitCalls - 1; i++) tuner.Next(Big, out _);
        Explore(tuner, d => d == 8 ? 1.0 : 2.0, rng, skip: i => i % n == 1);
        tuner.Next(Big, out _);
        Assert.That(tuner.Chosen, Is.EqualTo(16));
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
        for (int i = 0; i < PrefetchTuner.WarmupCalls + PrefetchTuner.ExploreCalls + 3; i++)
        {
            EmbeddingBag.Forward(table, indices, offsets, output, PoolingMode.Sum, default, pool);
            EmbeddingTestData.AssertClose(expected, output, 64, 1e-5, $"lookup {i} at distance {table.PrefetchDistance}");
        }
        Assert.That(PrefetchTuner.Candidates, Does.Contain(table.PrefetchDistance));
    }
}
