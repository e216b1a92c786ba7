using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>A pool of row ids drawn from a Zipf(s) distribution over [0, rows), hot ranks scattered over the table
/// by a multiplicative bijection (so "hot" does not mean "adjacent" — real hot ids are not neighbours). Requests
/// take slices of the pool: generating ids per request would cost more than the lookups being measured.</summary>
internal static class ZipfIds
{
    public static long[] Generate(long rows, double exponent, int count, int seed)
    {
        if (rows < 1) throw new ArgumentOutOfRangeException(nameof(rows), rows, "rows must be positive");
        if (exponent <= 0) throw new ArgumentOutOfRangeException(nameof(exponent), exponent, "Zipf exponent must be positive");
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be positive");
        // CDF over ranks; above a million ranks the tail is modelled as uniform among the remaining rows, which
        // keeps setup memory bounded (8 MB) while the head — what caches see — stays exact.
        int ranks = (int)Math.Min(rows, 1 << 20);
        var cdf = new double[ranks];
        double sum = 0;
        for (int r = 0; r < ranks; r++) cdf[r] = sum += Math.Pow(r + 1, -exponent);
        // Mass of the ranks beyond the table head, approximated by the integral of x^-s.
        double tail = rows > ranks ? Integral(ranks + 0.5, rows + 0.5, exponent) : 0;
        double total = sum + tail;
        long multiplier = Multiplier(rows);
        var rng = new Random(seed);
        var ids = new long[count];
        for (int i = 0; i < count; i++)
        {
            double u = rng.NextDouble() * total;
            long rank;
            if (u >= sum) rank = ranks + (long)(rng.NextDouble() * (rows - ranks));
            else
            {
                int k = Array.BinarySearch(cdf, u);
                rank = k >= 0 ? k : ~k;
            }
            ids[i] = (long)((UInt128)(ulong)rank * (ulong)multiplier % (ulong)rows);
        }
        return ids;
    }

    static double Integral(double a, double b, double s) =>
        Math.Abs(s - 1) < 1e-9 ? Math.Log(b / a) : (Math.Pow(b, 1 - s) - Math.Pow(a, 1 - s)) / (1 - s);

    /// <summary>An odd multiplier coprime with <paramref name="rows"/>, so rank → rank·m mod rows is a bijection.</summary>
    static long Multiplier(long rows)
    {
        long m = 2_654_435_761 % rows;
        if (m < 2) m = rows > 2 ? rows - 1 : 1;
        while (Gcd(m, rows) != 1) m = m + 1 < rows ? m + 1 : 1;
        return m;
    }

    static long Gcd(long a, long b) { while (b != 0) (a, b) = (b, a % b); return a; }
}
