using System.Globalization;

namespace LiveDlrm.Pim;

/// <summary>One CSR batch of lookups into one table (the shape of <c>EmbeddingBag.Forward</c>).</summary>
internal sealed record PimBatch(long[] Indices, long[] Offsets)
{
    public int Bags => Offsets.Length - 1;
}

/// <summary>How often each row of a table is looked up, plus the batches the counts came from (the partitioners
/// balance expected lookups from the counts; the report routes the batches to measure bytes and imbalance).</summary>
internal sealed class AccessProfile
{
    public long Rows { get; }
    /// <summary>Lookups per row.</summary>
    public long[] Counts { get; }
    public long TotalLookups { get; }
    public IReadOnlyList<PimBatch> Batches { get; }
    public string Description { get; }

    public AccessProfile(long rows, IReadOnlyList<PimBatch> batches, string description)
    {
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "a table has at least one row");
        if (rows > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"access profiles hold at most {Array.MaxLength} rows");
        Rows = rows;
        Batches = batches;
        Description = description;
        Counts = new long[rows];
        for (int b = 0; b < batches.Count; b++)
            foreach (long i in batches[b].Indices)
            {
                if ((ulong)i >= (ulong)rows)
                    throw new ArgumentOutOfRangeException(nameof(batches), i, $"access profile '{description}': batch {b} has id {i} outside [0, {rows})");
                Counts[i]++;
                TotalLookups++;
            }
    }

    /// <summary>The first half of the batches to plan from and the second half to evaluate on, so a plan is judged on
    /// lookups it has not seen (the counts of a finite sample flatter a plan built from the same sample).</summary>
    public (AccessProfile Plan, AccessProfile Evaluate) SplitHalves()
    {
        if (Batches.Count < 2) throw new InvalidOperationException($"access profile '{Description}' has {Batches.Count} batch(es); splitting needs at least 2");
        int half = Batches.Count / 2;
        return (new AccessProfile(Rows, Batches.Take(half).ToList(), Description + " [plan half]"),
                new AccessProfile(Rows, Batches.Skip(half).ToList(), Description + " [evaluation half]"));
    }

    /// <summary>Every row equally likely (no information): what a uniform plan assumes.</summary>
    public static AccessProfile Uniform(long rows, int batches, int bagsPerBatch, int pooling, int seed = 1)
    {
        var rng = new Random(seed);
        return new AccessProfile(rows, MakeBatches(batches, bagsPerBatch, pooling, () => rng.NextInt64(rows)), $"uniform({rows})");
    }

    /// <summary>Zipf(<paramref name="s"/>) ids: rank k drawn with probability ∝ k^-s, ranks scattered over the id space by
    /// a fixed bijection (hot rows are not contiguous ids in real data, and a contiguous hot range would flatter or
    /// ruin contiguous partitions by accident).</summary>
    public static AccessProfile Zipf(long rows, double s, int batches, int bagsPerBatch, int pooling, int seed = 1)
    {
        if (s <= 0) throw new ArgumentOutOfRangeException(nameof(s), s, "Zipf exponent must be positive");
        var sampler = new ZipfSampler(rows, s);
        var rng = new Random(seed);
        return new AccessProfile(rows, MakeBatches(batches, bagsPerBatch, pooling, () => sampler.RankToId(sampler.Sample(rng))),
                                 string.Create(CultureInfo.InvariantCulture, $"zipf({s}) over {rows} rows"));
    }

    /// <summary>A trace file: one bag per line, ids separated by spaces, commas or tabs; '#' starts a comment.
    /// Lines are grouped into batches of <paramref name="bagsPerBatch"/> bags.</summary>
    public static AccessProfile FromTrace(string path, long rows, int bagsPerBatch)
    {
        if (bagsPerBatch <= 0) throw new ArgumentOutOfRangeException(nameof(bagsPerBatch), bagsPerBatch, "must be positive");
        var batches = new List<PimBatch>();
        var indices = new List<long>();
        var offsets = new List<long> { 0 };
        int lineNo = 0;
        foreach (string raw in File.ReadLines(path))
        {
            lineNo++;
            string line = raw.Split('#')[0];
            var parts = line.Split([' ', ',', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) continue;
            foreach (string p in parts)
            {
                if (!long.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out long id))
                    throw new FormatException($"trace {path}:{lineNo}: '{p}' is not an integer id");
                if ((ulong)id >= (ulong)rows)
                    throw new FormatException($"trace {path}:{lineNo}: id {id} outside the table's [0, {rows})");
                indices.Add(id);
            }
            offsets.Add(indices.Count);
            if (offsets.Count - 1 == bagsPerBatch) Flush();
        }
        if (offsets.Count > 1) Flush();
        if (batches.Count == 0) throw new FormatException($"trace {path} has no ids");
        return new AccessProfile(rows, batches, $"trace {Path.GetFileName(path)}");

        void Flush()
        {
            batches.Add(new PimBatch(indices.ToArray(), offsets.ToArray()));
            indices.Clear();
            offsets.Clear();
            offsets.Add(0);
        }
    }

    static List<PimBatch> MakeBatches(int batches, int bagsPerBatch, int pooling, Func<long> next)
    {
        if (batches <= 0 || bagsPerBatch <= 0 || pooling <= 0)
            throw new ArgumentOutOfRangeException(nameof(batches), $"batches {batches}, bags {bagsPerBatch} and pooling {pooling} must be positive");
        var list = new List<PimBatch>(batches);
        for (int b = 0; b < batches; b++)
        {
            var idx = new long[bagsPerBatch * pooling];
            var off = new long[bagsPerBatch + 1];
            for (int i = 0; i < idx.Length; i++) idx[i] = next();
            for (int g = 0; g <= bagsPerBatch; g++) off[g] = (long)g * pooling;
            list.Add(new PimBatch(idx, off));
        }
        return list;
    }
}

/// <summary>Inverse-CDF Zipf sampler over ranks 1..rows (binary search in the cumulative weights).</summary>
internal sealed class ZipfSampler
{
    readonly double[] _cdf;
    readonly long _rows, _stride;

    public ZipfSampler(long rows, double s)
    {
        if (rows <= 0 || rows > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(rows), rows, "rows must be in [1, Array.MaxLength]");
        _rows = rows;
        _cdf = new double[rows];
        double acc = 0;
        for (long k = 0; k < rows; k++) { acc += Math.Pow(k + 1, -s); _cdf[k] = acc; }
        for (long k = 0; k < rows; k++) _cdf[k] /= acc;
        // A multiplier coprime with rows makes rank -> id a bijection that scatters hot ranks.
        long stride = 2654435761L % rows;
        if (stride == 0) stride = 1;
        while (Gcd(stride, rows) != 1) stride++;
        _stride = stride;
    }

    /// <summary>Zero-based rank (0 = hottest).</summary>
    public long Sample(Random rng)
    {
        int i = Array.BinarySearch(_cdf, rng.NextDouble());
        return Math.Min(i >= 0 ? i : ~i, _rows - 1);
    }

    public long RankToId(long rank) => (long)((UInt128)(ulong)rank * (ulong)_stride % (ulong)_rows);

    /// <summary>Share of all lookups that fall on the <paramref name="top"/> hottest ranks.</summary>
    public double TopShare(long top) => top <= 0 ? 0 : _cdf[Math.Min(top, _rows) - 1];

    static long Gcd(long a, long b) { while (b != 0) (a, b) = (b, a % b); return a; }
}
