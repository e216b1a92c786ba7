namespace LiveDlrm.Perf;

/// <summary>
/// A Criteo-shaped example stream for the fleet benchmark's wire comparison: 13 dense features (log1p of
/// heavy-tailed counts, as DLRM feeds Criteo's integer columns) and 26 categorical features whose vocabularies are
/// the Criteo Kaggle cardinalities; each value is drawn Zipf(<see cref="ZipfExponent"/>) over its vocabulary,
/// mapped to a row by a fixed permutation (popularity does not follow the id) and hashed into a table of
/// <see cref="Rows"/> rows (value mod rows, as DLRM's <c>--max-ind-range</c>). Labels are 1 with probability 0.25;
/// event time advances at <see cref="EventsPerSecond"/>. Deterministic by seed.
/// </summary>
internal sealed class CriteoShapedStream
{
    /// <summary>Distinct values per categorical column in the Criteo Kaggle (Display Advertising Challenge) data.</summary>
    public static readonly long[] Vocabularies =
    [
        1460, 583, 10_131_227, 2_202_608, 305, 24, 12_517, 633, 3, 93_145, 5_683, 8_351_593, 3_194,
        27, 14_992, 5_461_306, 10, 5_652, 2_173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572,
    ];
    public const int Dense = 13, Dim = 64;
    public const long Rows = 1_000_000;
    public const double ZipfExponent = 1.05;
    public const long StartTime = 1_700_000_000;

    public double EventsPerSecond { get; }
    readonly Random _rng;
    readonly ZipfSampler[] _zipf;
    readonly long[] _multiplier;
    long _index;

    public CriteoShapedStream(int seed, double eventsPerSecond)
    {
        EventsPerSecond = eventsPerSecond;
        _rng = new Random(seed);
        _zipf = Vocabularies.Select(v => new ZipfSampler(v, ZipfExponent)).ToArray();
        // An affine permutation of each vocabulary (a multiplier coprime to it): ranks land on scattered values.
        _multiplier = Vocabularies.Select(Multiplier).ToArray();
    }

    static long Multiplier(long v) { long m = (long)(v * 0.6180339887) | 1; while (Gcd(m, v) != 1) m += 2; return m; }

    static long Gcd(long a, long b) { while (b != 0) (a, b) = (b, a % b); return a; }

    /// <summary>The row of table <paramref name="t"/> that the next draw of that column hits.</summary>
    public long NextRow(int t)
    {
        long v = Vocabularies[t];
        long rank = _zipf[t].Sample(_rng) - 1;
        long value = (long)((UInt128)(ulong)rank * (ulong)_multiplier[t] % (ulong)v);
        return value % Rows;
    }

    /// <summary>The next event: label, event time, dense values, one id per table.</summary>
    public (float Label, long Time, float[] Dense, long[][] Bags) Next()
    {
        var dense = new float[Dense];
        for (int f = 0; f < Dense; f++)
        {
            // Counts: ~15 % missing (0), else exp of a normal whose centre differs per column.
            if (_rng.NextDouble() < 0.15) { dense[f] = 0; continue; }
            double z = Math.Sqrt(-2 * Math.Log(1 - _rng.NextDouble())) * Math.Cos(2 * Math.PI * _rng.NextDouble());
            double count = Math.Floor(Math.Exp(0.5 + 0.25 * f + 1.2 * z));
            dense[f] = (float)Math.Log(1 + count);
        }
        var bags = new long[Vocabularies.Length][];
        for (int t = 0; t < bags.Length; t++) bags[t] = [NextRow(t)];
        float label = _rng.NextDouble() < 0.25 ? 1f : 0f;
        long time = StartTime + (long)Math.Floor(_index / EventsPerSecond);
        _index++;
        return (label, time, dense, bags);
    }

    /// <summary>Entropy in bits of one draw of table <paramref name="t"/>'s row, exactly as <see cref="NextRow"/> draws
    /// it: the Zipf mass of every rank, carried through the permutation and the hash onto its row.</summary>
    public static double RowEntropyBits(int t)
    {
        long v = Vocabularies[t], m = Multiplier(v);
        var mass = new double[Math.Min(v, Rows)];
        double total = 0;
        for (long rank = 0; rank < v; rank++)
        {
            double p = Math.Exp(-ZipfExponent * Math.Log(rank + 1));
            long value = (long)((UInt128)(ulong)rank * (ulong)m % (ulong)v);
            mass[value % Rows] += p;
            total += p;
        }
        return EntropyBits(mass, total);
    }

    /// <summary>Entropy in bits of dense feature <paramref name="f"/> as <see cref="Next"/> draws it: 0 with the
    /// missing probability or a count floor(exp(μ + σz)) of 0, else log1p of the count (one float per count).</summary>
    public static double DenseEntropyBits(int f)
    {
        double mu = 0.5 + 0.25 * f, sigma = 1.2;
        // Upper tails P(X ≥ c) from erfc, which keeps its relative precision far out in the tail.
        double Tail(double count) => count <= 0 ? 1 : 0.5 * Erfc((Math.Log(count) - mu) / sigma / Math.Sqrt(2));
        var mass = new List<double> { 0.15 + 0.85 * (1 - Tail(1)) };
        for (long k = 1; k < 100_000_000 && Tail(k) > 1e-13; k++) mass.Add(0.85 * (Tail(k) - Tail(k + 1)));
        return EntropyBits(mass.ToArray(), mass.Sum());
    }

    /// <summary>Entropy in bits of the label (1 with probability 0.25).</summary>
    public static double LabelEntropyBits => -(0.25 * Math.Log2(0.25) + 0.75 * Math.Log2(0.75));

    static double EntropyBits(double[] mass, double total)
    {
        double h = 0;
        foreach (double w in mass) if (w > 0) { double p = w / total; h -= p * Math.Log2(p); }
        return h;
    }

    /// <summary>Φ(x) from erfc (W. J. Cody's rational approximations via the complementary error function of Numerical
    /// Recipes' erfcc, relative error below 1.2e-7: ample for an entropy).</summary>
    static double NormalCdf(double x) => 0.5 * Erfc(-x / Math.Sqrt(2));

    static double Erfc(double x)
    {
        double z = Math.Abs(x), t = 1 / (1 + 0.5 * z);
        double r = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
                   + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? r : 2 - r;
    }

    /// <summary>Dense (MLP) parameters of a DLRM on this stream: bottom 13-512-256-64, dot interaction over 27
    /// vectors, top 415-512-256-1.</summary>
    public static long DenseParameters()
    {
        static long Mlp(params int[] widths) { long p = 0; for (int i = 1; i < widths.Length; i++) p += (long)widths[i - 1] * widths[i] + widths[i]; return p; }
        int n = Vocabularies.Length + 1;
        return Mlp(Dense, 512, 256, Dim) + Mlp(Dim + n * (n - 1) / 2, 512, 256, 1);
    }
}

/// <summary>Zipf ranks 1..n with exponent s by rejection-inversion (Hörmann and Derflinger), O(1) per draw without
/// a table, so 10 M-value vocabularies cost nothing to set up.</summary>
internal sealed class ZipfSampler
{
    readonly long _n;
    readonly double _s, _hIntegralX1, _hIntegralN, _threshold;

    public ZipfSampler(long n, double exponent)
    {
        _n = n; _s = exponent;
        _hIntegralX1 = HIntegral(1.5) - 1;
        _hIntegralN = HIntegral(n + 0.5);
        _threshold = 2 - HIntegralInverse(HIntegral(2.5) - H(2));
    }

    public long Sample(Random rng)
    {
        while (true)
        {
            double u = _hIntegralN + rng.NextDouble() * (_hIntegralX1 - _hIntegralN);
            double x = HIntegralInverse(u);
            long k = (long)(x + 0.5);
            if (k < 1) k = 1; else if (k > _n) k = _n;
            if (k - x <= _threshold || u >= HIntegral(k + 0.5) - H(k)) return k;
        }
    }

    double H(double x) => Math.Exp(-_s * Math.Log(x));
    double HIntegral(double x) { double lx = Math.Log(x); return Helper2((1 - _s) * lx) * lx; }
    double HIntegralInverse(double x) { double t = x * (1 - _s); if (t < -1) t = -1; return Math.Exp(Helper1(t) * x); }
    static double Helper1(double x) => Math.Abs(x) > 1e-8 ? Math.Log(1 + x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
    static double Helper2(double x) => Math.Abs(x) > 1e-8 ? (Math.Exp(x) - 1) / x : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}
