namespace LiveDlrm.Perf.Lookup;

/// <summary>Id distribution of a case.</summary>
enum IdDistribution { Uniform, Zipf }

/// <summary>Pre-generated CSR batches, shared by every contender of a case: <see cref="Count"/> distinct index arrays
/// (so a large table is not served from the last-level cache by repeating one batch) and one offsets array of fixed
/// pooling. All arrays live on the pinned object heap, so native code can take their addresses once, and nothing is
/// generated or allocated while a contender is timed.</summary>
sealed class LookupBatches
{
    public int Bags { get; }
    public int Pooling { get; }
    public long Rows { get; }
    public IdDistribution Distribution { get; }
    public long[][] Indices { get; }
    /// <summary>CSR offsets, <see cref="Bags"/> + 1 entries (LiveDlrm and the native reference).</summary>
    public long[] Offsets { get; }
    public int Count => Indices.Length;
    public int LookupsPerBatch => Bags * Pooling;

    public LookupBatches(long rows, int bags, int pooling, int count, IdDistribution distribution, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(bags, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(pooling, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        Rows = rows;
        Bags = bags;
        Pooling = pooling;
        Distribution = distribution;
        Offsets = GC.AllocateUninitializedArray<long>(bags + 1, pinned: true);
        for (int b = 0; b <= bags; b++) Offsets[b] = (long)b * pooling;

        var random = new Random(seed);
        var zipf = distribution == IdDistribution.Zipf ? new ZipfSampler(rows, 1.05) : null;
        Indices = new long[count][];
        for (int i = 0; i < count; i++)
        {
            var ids = GC.AllocateUninitializedArray<long>(bags * pooling, pinned: true);
            for (int k = 0; k < ids.Length; k++) ids[k] = zipf is null ? random.NextInt64(rows) : zipf.Sample(random);
            Indices[i] = ids;
        }
    }
}

/// <summary>Zipf(s) ids over [0, rows): rank k (1-based) has probability ∝ 1 / k^s, sampled by inverting the exact
/// CDF (binary search). Ranks are scattered over the table by a bijective multiplicative hash, so the hot rows are
/// not the first few contiguous rows (which would share cache lines and pages and flatter every contender).</summary>
sealed class ZipfSampler
{
    readonly double[] _cdf;
    readonly long _rows;
    readonly ulong _multiplier;

    public ZipfSampler(long rows, double exponent)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        _rows = rows;
        _cdf = new double[rows];
        double sum = 0;
        for (long k = 0; k < rows; k++) { sum += 1.0 / Math.Pow(k + 1, exponent); _cdf[k] = sum; }
        for (long k = 0; k < rows; k++) _cdf[k] /= sum;
        // An odd prime coprime with rows makes rank -> (rank * m) mod rows a permutation of [0, rows).
        ulong m = 2_654_435_761;
        while (Gcd(m, (ulong)rows) != 1) m += 2;
        _multiplier = m;
    }

    public long Sample(Random random)
    {
        double u = random.NextDouble();
        int rank = Array.BinarySearch(_cdf, u);
        if (rank < 0) rank = ~rank;
        if (rank >= _rows) rank = (int)_rows - 1;
        return (long)((ulong)rank * _multiplier % (ulong)_rows);
    }

    static ulong Gcd(ulong a, ulong b) { while (b != 0) (a, b) = (b, a % b); return a; }
}
