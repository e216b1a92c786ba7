namespace LiveDlrm.Embeddings;

/// <summary>The software-prefetch distance of one table, chosen from that table's own lookups. The best distance
/// depends on the storage type, the table's size against the caches and the id distribution (Zipf traffic, whose hot
/// rows hit the cache, needs a longer lead for its misses than uniform traffic: 24–32 rows against 0–16; 24 is a
/// candidate because the C gather's best distance was 24 on several cases), none of which a constant per storage
/// type can know.
/// <para>So lookups of at least <see cref="MinTimedLookups"/> are timed in <see cref="Rounds"/> rounds; a round is
/// one lookup at every one of the <see cref="Candidates"/>, back to back (the order rotated from round to round), so
/// the candidates of a round see the same background load. Each time is divided by the fastest of its round and a
/// candidate's score is the median of those ratios over the complete rounds: a slow spell of the host (another
/// process taking memory bandwidth, preemption) scales a whole round and cancels out, where comparing each
/// candidate's own best sample would reward whichever candidate happened to run in the quietest moment. The lowest
/// score is used for the next <see cref="ExploitCalls"/> lookups, then the rounds repeat, following a change of
/// traffic. The first rounds start only after <see cref="WarmupCalls"/> timed-size lookups: a table's first lookups
/// run while the process is still warming up (code tiering up, the pool's threads and the caches settling) and get
/// faster from one lookup to the next, a trend inside a round that no ratio cancels (it ranked the candidates in the
/// order they came). Until the first rounds end the storage type's default applies. Updates from concurrent lookups race
/// benignly: the state is a heuristic, every field is read and written whole, and any distance gives the same
/// results.</para></summary>
internal sealed class PrefetchTuner(int initialDistance)
{
    internal static readonly int[] Candidates = [0, 8, 16, 24, 32];
    internal const int Rounds = 16;
    internal const int ExploitCalls = 2000;
    internal const int WarmupCalls = 200;
    /// <summary>Smaller lookups run on the calling thread in a few µs: too short to time, and the pool's wake-up is
    /// not part of them.</summary>
    internal const int MinTimedLookups = EmbeddingBag.ParallelThresholdLookups;
    internal static readonly int ExploreCalls = Rounds * Candidates.Length;
    static readonly int CycleCalls = ExploreCalls + ExploitCalls;

    /// <summary>Time per lookup of exploration turn i (round i / candidates, candidate <see cref="CandidateOf"/>);
    /// 0 = not recorded (a lookup that ran on one thread because the pool was busy, or one that failed).</summary>
    readonly double[] _samples = new double[ExploreCalls];
    long _calls = -1;
    volatile int _chosen = initialDistance;

    /// <summary>The distance in use outside the exploration turns.</summary>
    public int Chosen => _chosen;

    /// <summary>The candidate index timed by exploration turn <paramref name="turn"/>. Round r visits the candidates
    /// with step 1 + r mod (count − 1) from candidate r mod count (the count is prime), so both the candidate that
    /// opens a round and the one each candidate follows change from round to round: a lookup that leaves the caches,
    /// the prefetchers or the pool's threads in a state that helps or hurts the next one does not favour one
    /// candidate throughout.</summary>
    internal static int CandidateOf(int turn)
    {
        int n = Candidates.Length, round = turn / n;
        return (round % n + turn % n * (1 + round % (n - 1))) % n;
    }

    /// <summary>Each candidate's score in the last complete exploration (median time over its round's fastest; 1 is
    /// the best possible), NaN before one: what <c>bench lookup</c> prints beside the chosen distance.</summary>
    public double[] LastScores { get; } = Candidates.Select(_ => double.NaN).ToArray();

    /// <summary>The distance for a lookup of <paramref name="lookups"/> indices; <paramref name="turn"/> ≥ 0 when
    /// this lookup is an exploration turn whose time is to be passed to <see cref="Record"/>.</summary>
    public int Next(int lookups, out int turn)
    {
        turn = -1;
        if (lookups < MinTimedLookups) return _chosen;
        long sequence = Interlocked.Increment(ref _calls) - WarmupCalls;
        if (sequence < 0) return _chosen;
        int call = (int)(sequence % CycleCalls);
        if (call >= ExploreCalls)
        {
            if (call == ExploreCalls) Choose();
            return _chosen;
        }
        if (call == 0) Array.Clear(_samples);
        turn = call;
        return Candidates[CandidateOf(call)];
    }

    /// <summary>The time exploration turn <paramref name="turn"/> took (Stopwatch ticks) for <paramref name="lookups"/>
    /// indices.</summary>
    public void Record(int turn, long ticks, int lookups)
    {
        if ((uint)turn < (uint)_samples.Length && ticks > 0) _samples[turn] = (double)ticks / lookups;
    }

    /// <summary>No allocation: it runs inside a served lookup.</summary>
    void Choose()
    {
        int n = Candidates.Length;
        Span<double> ratios = stackalloc double[n * Rounds];   // candidate c's ratios at [c·Rounds, c·Rounds + complete)
        int complete = 0;
        Span<double> round = stackalloc double[n];
        for (int r = 0; r < Rounds; r++)
        {
            double fastest = double.MaxValue;
            bool whole = true;
            for (int k = 0; k < n; k++)
            {
                int turn = r * n + k;
                double t = _samples[turn];
                if (t <= 0) { whole = false; break; }
                round[CandidateOf(turn)] = t;
                fastest = Math.Min(fastest, t);
            }
            if (!whole) continue;
            for (int c = 0; c < n; c++) ratios[c * Rounds + complete] = round[c] / fastest;
            complete++;
        }
        if (complete == 0) return;
        int best = 0;
        double bestScore = double.MaxValue;
        for (int c = 0; c < n; c++)
        {
            double score = Median(ratios.Slice(c * Rounds, complete));
            LastScores[c] = score;
            if (score < bestScore) (best, bestScore) = (c, score);
        }
        _chosen = Candidates[best];
    }

    static double Median(Span<double> values)
    {
        values.Sort();
        int m = values.Length / 2;
        return values.Length % 2 == 1 ? values[m] : (values[m - 1] + values[m]) / 2;
    }
}
