namespace LiveDlrm.Runtime;

/// <summary>Additions of event times and user-given durations that clamp at the long range instead of wrapping: a
/// label delay of <see cref="long.MaxValue"/> seconds means "never", not a time in the past.</summary>
internal static class SaturatingMath
{
    public static long Add(long a, long b)
    {
        long sum = unchecked(a + b);
        // Overflow iff both operands have the same sign and the sum's sign differs.
        if (((a ^ sum) & (b ^ sum)) < 0) return a < 0 ? long.MinValue : long.MaxValue;
        return sum;
    }

    public static long Multiply(long a, long b)
    {
        long product;
        try { product = checked(a * b); }
        catch (OverflowException) { return (a < 0) ^ (b < 0) ? long.MinValue : long.MaxValue; }
        return product;
    }
}
