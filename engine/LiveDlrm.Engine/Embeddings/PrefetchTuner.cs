namespace LiveDlrm.Embeddings;

/// <summary>The software-prefetch distance of one table, chosen from that table's own lookups. The best distance
/// depends on the storage type, the table's size against the caches and the id distribution (Zipf traffic, whose hot
/// rows hit the cache, needs a longer lead for its misses than uniform traffic: 24–32 rows against 0–16; 24 is a candidate because
/// the C gather's best distance was 24 on several cases), none of which
/// a constant per storage type can know. So lookups of at least <see cref="MinTimedLookups"/> take turns over
/// <see cref="Candidates"/> (round robin, <see cref="SamplesPerCandidate"/> each, so a burst of background load hits
/// every candidate alike), the fastest per lookup (the minimum over its samples: preemption only ever adds time) is
/// used for the next <see cref="ExploitCalls"/> lookups, then the round is repeated. Until the first round ends the
/// storage type's default applies. Updates from concurrent lookups race benignly: the state is a heuristic, every
/// field is read and written whole, and any distance gives the same results.</summary>
internal sealed class PrefetchTuner(int initialDistance)
{
    internal static readonly int[] Candidates = [0, 8, 16, 24, 32];
    internal const int SamplesPerCandidate = 6;
    internal const int ExploitCalls = 2000;
    /// <summary>Smaller lookups run on the calling thread in a few µs: too short to time, and the pool's wake-up is
    /// not part of them.</summary>
    internal const int MinTimedLookups = EmbeddingBag.ParallelThresholdLookups;
    static readonly int ExploreCalls = SamplesPerCandidate * Candidates.Length;
    static readonly int CycleCalls = ExploreCalls + ExploitCalls;

    readonly double[] _fastest = Candidates.Select(_ => double.MaxValue).ToArray();
    int _calls = -1;
    volatile int _chosen = initialDistance;

    /// <summary>The distance in use outside the exploration turns.</summary>
    public int Chosen => _chosen;

    /// <summary>The distance for a lookup of <paramref name="lookups"/> indices; <paramref name="candidate"/> ≥ 0 when
    /// this lookup is an exploration turn whose time is to be passed to <see cref="Record"/>.</summary>
    public int Next(int lookups, out int candidate)
    {
        candidate = -1;
        if (lookups < MinTimedLookups) return _chosen;
        int call = (int)((uint)Interlocked.Increment(ref _calls) % CycleCalls);
        if (call >= ExploreCalls)
        {
            if (call == ExploreCalls) Choose();
            return _chosen;
        }
        if (call == 0) Array.Fill(_fastest, double.MaxValue);
        candidate = call % Candidates.Length;
        return Candidates[candidate];
    }

    /// <summary>The time an exploration turn took (Stopwatch ticks) for <paramref name="lookups"/> indices.</summary>
    public void Record(int candidate, long ticks, int lookups)
    {
        double perLookup = (double)ticks / lookups;
        if (perLookup < _fastest[candidate]) _fastest[candidate] = perLookup;
    }

    void Choose()
    {
        int best = -1;
        for (int i = 0; i < Candidates.Length; i++)
            if (_fastest[i] < double.MaxValue && (best < 0 || _fastest[i] < _fastest[best])) best = i;
        if (best >= 0) _chosen = Candidates[best];
    }
}
