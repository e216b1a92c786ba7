namespace LiveDlrm.Data;

/// <summary>Draws shared by the synthetic worlds (<see cref="SyntheticEventSource"/>, <see cref="VisitEventSource"/>),
/// so that both build their Zipf ranks and random orders the same way from a seed.</summary>
internal static class SyntheticDraws
{
    /// <summary>Running sums of the Zipf weights r^−<paramref name="exponent"/> for ranks 1..<paramref name="count"/>
    /// (not normalised: the last entry is the total).</summary>
    public static double[] ZipfCumulative(int count, double exponent)
    {
        var cumulative = new double[count];
        double sum = 0;
        for (int r = 0; r < count; r++) { sum += Math.Pow(r + 1, -exponent); cumulative[r] = sum; }
        return cumulative;
    }

    /// <summary>0..<paramref name="count"/>−1 in a random order (Fisher–Yates).</summary>
    public static int[] RandomPermutation(ref Xoshiro256 rng, int count)
    {
        var order = Enumerable.Range(0, count).ToArray();
        for (int i = order.Length - 1; i > 0; i--) { int j = rng.NextInt(i + 1); (order[i], order[j]) = (order[j], order[i]); }
        return order;
    }
}
