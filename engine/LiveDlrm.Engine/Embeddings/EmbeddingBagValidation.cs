using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LiveDlrm.Embeddings;

/// <summary>Validation of a lookup, shared by every kernel and backend; messages name the table, the position and the
/// value. Two parts: <see cref="ValidateShape{TIndex, TOffset}"/> (table, offsets, weights, output length: O(bags),
/// everything the kernels trust) and <see cref="CheckIndices{TIndex}"/> (one pass over the indices). The plain lookup
/// (<see cref="EmbeddingBag"/>) runs only the first before its kernels, which compare every index against the table
/// in their own loop (a pass of its own over a batch's indices cost about as much as the cached-table lookup trailed
/// the C gather by); <see cref="Validate{TIndex, TOffset}"/> runs both, before any output is written, for the callers
/// that promise to leave the output untouched on any bad input (multi-table lookups, the LoRA lookup, the reference,
/// training) or whose kernels do not check indices.</summary>
internal static class EmbeddingBagValidation
{
    /// <summary>Checks a CSR batch against <paramref name="table"/> and returns the number of bags.</summary>
    public static int Validate<TIndex, TOffset>(EmbeddingTable table, ReadOnlySpan<TIndex> indices, ReadOnlySpan<TOffset> offsets,
                                                int outputLength, PoolingMode pooling, ReadOnlySpan<float> weights)
        where TIndex : unmanaged, IBinaryInteger<TIndex>
        where TOffset : unmanaged, IBinaryInteger<TOffset>
    {
        int bags = ValidateShape(table, indices, offsets, outputLength, pooling, weights);
        CheckIndices(table, indices);
        return bags;
    }

    /// <summary>Everything but the indices' values: the table, the offsets (bags + 1 entries, 0 first, non-decreasing,
    /// indices.Length last), the weights against the pooling mode, the output length. Returns the number of bags.</summary>
    public static int ValidateShape<TIndex, TOffset>(EmbeddingTable table, ReadOnlySpan<TIndex> indices, ReadOnlySpan<TOffset> offsets,
                                                     int outputLength, PoolingMode pooling, ReadOnlySpan<float> weights)
        where TIndex : unmanaged, IBinaryInteger<TIndex>
        where TOffset : unmanaged, IBinaryInteger<TOffset>
    {
        ArgumentNullException.ThrowIfNull(table);
        ObjectDisposedException.ThrowIf(table.IsDisposed, table);
        if (offsets.Length == 0)
            throw new ArgumentException($"table '{table.Name}': offsets is empty; CSR offsets need bags + 1 entries (at least [0])", nameof(offsets));
        int bags = offsets.Length - 1;
        long first = long.CreateTruncating(offsets[0]);
        if (first != 0)
            throw new ArgumentException($"table '{table.Name}': offsets[0] is {first}, must be 0", nameof(offsets));
        // Non-decreasing from 0 to indices.Length keeps every offset inside indices; a failure is located and named
        // by the scalar walk.
        if (!NonDecreasing(offsets) || long.CreateTruncating(offsets[bags]) != indices.Length)
            ThrowBadOffsets(table, indices.Length, offsets);

        if (pooling == PoolingMode.WeightedSum)
        {
            if (weights.Length != indices.Length)
                throw new ArgumentException($"table '{table.Name}': weighted-sum pooling needs one weight per index: {weights.Length} weights for {indices.Length} indices", nameof(weights));
        }
        else if (weights.Length != 0)
            throw new ArgumentException($"table '{table.Name}': {weights.Length} per-sample weights given with {pooling} pooling (use WeightedSum)", nameof(weights));
        else if (pooling is not (PoolingMode.Sum or PoolingMode.Mean))
            throw new ArgumentOutOfRangeException(nameof(pooling), pooling, $"table '{table.Name}': unknown pooling mode");

        long needed = (long)bags * table.Dim;
        if (outputLength < needed)
            throw new ArgumentException($"table '{table.Name}': output holds {outputLength} floats, {bags} bags × dim {table.Dim} need {needed}", "output");
        return bags;
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first index outside [0, rows).</summary>
    public static void CheckIndices<TIndex>(EmbeddingTable table, ReadOnlySpan<TIndex> indices) where TIndex : unmanaged, IBinaryInteger<TIndex>
    {
        int bad = FirstOutOfRange(indices, table.Rows);
        if (bad >= 0) ThrowBadIndex(table, bad, long.CreateTruncating(indices[bad]));
    }

    /// <summary>Position of the first index outside [0, <paramref name="rows"/>), or −1. Vectorised: one unsigned max a
    /// vector (a negative index is a huge unsigned one), the scalar walk only from the block that failed.</summary>
    public static int FirstOutOfRange<TIndex>(ReadOnlySpan<TIndex> indices, long rows) where TIndex : unmanaged, IBinaryInteger<TIndex>
    {
        if (typeof(TIndex) == typeof(long))
            return FirstAtLeast(MemoryMarshal.Cast<TIndex, ulong>(indices), (ulong)rows);
        if (typeof(TIndex) == typeof(int))   // rows past int.MaxValue: only negative int indices are bad
            return FirstAtLeast(MemoryMarshal.Cast<TIndex, uint>(indices), (uint)Math.Min(rows, 1L << 31));
        for (int i = 0; i < indices.Length; i++)
            if ((ulong)long.CreateTruncating(indices[i]) >= (ulong)rows) return i;
        return -1;
    }

    static int FirstAtLeast<T>(ReadOnlySpan<T> values, T limit) where T : unmanaged, IBinaryInteger<T>, IUnsignedNumber<T>
    {
        ref T v = ref MemoryMarshal.GetReference(values);
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            int n = Vector512<T>.Count;
            var l = Vector512.Create(limit);
            for (; i + 4 * n <= values.Length; i += 4 * n)
            {
                var m = Vector512.Max(Vector512.Max(Vector512.LoadUnsafe(ref v, (nuint)i), Vector512.LoadUnsafe(ref v, (nuint)(i + n))),
                                      Vector512.Max(Vector512.LoadUnsafe(ref v, (nuint)(i + 2 * n)), Vector512.LoadUnsafe(ref v, (nuint)(i + 3 * n))));
                if (Vector512.GreaterThanOrEqualAny(m, l)) break;
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            int n = Vector256<T>.Count;
            var l = Vector256.Create(limit);
            for (; i + 4 * n <= values.Length; i += 4 * n)
            {
                var m = Vector256.Max(Vector256.Max(Vector256.LoadUnsafe(ref v, (nuint)i), Vector256.LoadUnsafe(ref v, (nuint)(i + n))),
                                      Vector256.Max(Vector256.LoadUnsafe(ref v, (nuint)(i + 2 * n)), Vector256.LoadUnsafe(ref v, (nuint)(i + 3 * n))));
                if (Vector256.GreaterThanOrEqualAny(m, l)) break;
            }
        }
        for (; i < values.Length; i++)
            if (Unsafe.Add(ref v, i) >= limit) return i;
        return -1;
    }

    /// <summary>Whether offsets[b] ≥ offsets[b − 1] for every b (vectorised: each vector against the one a lane back).</summary>
    static bool NonDecreasing<TOffset>(ReadOnlySpan<TOffset> offsets) where TOffset : unmanaged, IBinaryInteger<TOffset>
    {
        ref TOffset o = ref MemoryMarshal.GetReference(offsets);
        int b = 1;
        if (typeof(TOffset) == typeof(long) || typeof(TOffset) == typeof(int))
        {
            if (Vector512.IsHardwareAccelerated)
            {
                int n = Vector512<TOffset>.Count;
                for (; b + n <= offsets.Length; b += n)
                    if (Vector512.LessThanAny(Vector512.LoadUnsafe(ref o, (nuint)b), Vector512.LoadUnsafe(ref o, (nuint)(b - 1)))) return false;
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                int n = Vector256<TOffset>.Count;
                for (; b + n <= offsets.Length; b += n)
                    if (Vector256.LessThanAny(Vector256.LoadUnsafe(ref o, (nuint)b), Vector256.LoadUnsafe(ref o, (nuint)(b - 1)))) return false;
            }
        }
        for (; b < offsets.Length; b++)
            if (Unsafe.Add(ref o, b) < Unsafe.Add(ref o, b - 1)) return false;
        return true;
    }

    /// <summary>The first offset that breaks the CSR rules, named (the vector check only says that one does).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void ThrowBadOffsets<TOffset>(EmbeddingTable table, int indicesLength, ReadOnlySpan<TOffset> offsets) where TOffset : unmanaged, IBinaryInteger<TOffset>
    {
        int bags = offsets.Length - 1;
        long previous = 0;
        for (int b = 1; b <= bags; b++)
        {
            long o = long.CreateTruncating(offsets[b]);
            if (o < previous)
                throw new ArgumentException($"table '{table.Name}': offsets[{b}] = {o} is less than offsets[{b - 1}] = {previous} (offsets must be non-decreasing)", nameof(offsets));
            if (o > indicesLength)
                throw new ArgumentOutOfRangeException(nameof(offsets), o, $"table '{table.Name}': offsets[{b}] = {o} is past the end of indices (length {indicesLength})");
            previous = o;
        }
        throw new ArgumentException($"table '{table.Name}': offsets[{bags}] = {previous} must equal indices.Length = {indicesLength}", nameof(offsets));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void ThrowBadIndex(EmbeddingTable table, int position, long value) =>
        throw new ArgumentOutOfRangeException("indices", value, $"table '{table.Name}': indices[{position}] = {value} is outside [0, {table.Rows})");
}
