using System.Numerics;

namespace LiveDlrm.Embeddings;

/// <summary>The one validation pass of a lookup, run before any output row is written (so a bad batch leaves the
/// caller's output untouched) and shared by every kernel and backend. Messages name the table, the position and
/// the value.</summary>
internal static class EmbeddingBagValidation
{
    /// <summary>Checks a CSR batch against <paramref name="table"/> and returns the number of bags.</summary>
    public static int Validate<TIndex, TOffset>(EmbeddingTable table, ReadOnlySpan<TIndex> indices, ReadOnlySpan<TOffset> offsets,
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
        long previous = 0;
        for (int b = 1; b <= bags; b++)
        {
            long o = long.CreateTruncating(offsets[b]);
            if (o < previous)
                throw new ArgumentException($"table '{table.Name}': offsets[{b}] = {o} is less than offsets[{b - 1}] = {previous} (offsets must be non-decreasing)", nameof(offsets));
            if (o > indices.Length)
                throw new ArgumentOutOfRangeException(nameof(offsets), o, $"table '{table.Name}': offsets[{b}] = {o} is past the end of indices (length {indices.Length})");
            previous = o;
        }
        if (previous != indices.Length)
            throw new ArgumentException($"table '{table.Name}': offsets[{bags}] = {previous} must equal indices.Length = {indices.Length}", nameof(offsets));

        ulong rows = (ulong)table.Rows;
        for (int i = 0; i < indices.Length; i++)
        {
            long idx = long.CreateTruncating(indices[i]);
            if ((ulong)idx >= rows)     // one unsigned compare also catches negatives
                throw new ArgumentOutOfRangeException(nameof(indices), idx, $"table '{table.Name}': indices[{i}] = {idx} is outside [0, {table.Rows})");
        }

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
}
