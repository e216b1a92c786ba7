namespace LiveDlrm.Embeddings;

/// <summary>One table's batch in <see cref="IEmbeddingBackend.ForwardTables"/>: a CSR batch of
/// <see cref="Table"/>, pooled into <c>bags × Table.Dim</c> floats of the call's output starting at
/// <see cref="OutputStart"/>. Memory rather than spans so a list of them can be handed over whole (a backend that
/// serves all tables together needs every table's batch at once).</summary>
internal readonly record struct TableLookup(EmbeddingTable Table, ReadOnlyMemory<long> Indices, ReadOnlyMemory<long> Offsets, int OutputStart,
                                          PoolingMode Pooling = PoolingMode.Sum, ReadOnlyMemory<float> Weights = default)
{
    /// <summary>Validates every lookup of a multi-table call (each batch against its table, each output range inside
    /// <paramref name="outputLength"/>, no two output ranges overlapping) and returns the bags of each. Run before
    /// any output is written, so a bad lookup anywhere in the list leaves the whole output untouched.</summary>
    public static int[] Validate(IReadOnlyList<TableLookup> lookups, int outputLength)
    {
        ArgumentNullException.ThrowIfNull(lookups);
        var bags = new int[lookups.Count];
        for (int k = 0; k < lookups.Count; k++)
        {
            var q = lookups[k];
            ArgumentNullException.ThrowIfNull(q.Table, $"lookups[{k}].Table");
            if (q.OutputStart < 0 || q.OutputStart > outputLength)
                throw new ArgumentOutOfRangeException(nameof(lookups), q.OutputStart, $"table '{q.Table.Name}': output start {q.OutputStart} is outside the output ({outputLength} floats)");
            bags[k] = EmbeddingBagValidation.Validate(q.Table, q.Indices.Span, q.Offsets.Span, outputLength - q.OutputStart, q.Pooling, q.Weights.Span);
            long end = q.OutputStart + (long)bags[k] * q.Table.Dim;
            for (int j = 0; j < k; j++)
            {
                long s = lookups[j].OutputStart, e = s + (long)bags[j] * lookups[j].Table.Dim;
                if (q.OutputStart < e && s < end && end > q.OutputStart && e > s)
                    throw new ArgumentException($"tables '{lookups[j].Table.Name}' and '{q.Table.Name}' would write overlapping output ranges [{s}, {e}) and [{q.OutputStart}, {end})", nameof(lookups));
            }
        }
        return bags;
    }
}
