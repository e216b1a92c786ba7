namespace LiveDlrm.Embeddings;

/// <summary>Where pooled lookups run: the CPU SIMD kernels, or the UPMEM PIM shim (real DPUs or the project's
/// emulation). The model calls its tables through one of these, so the choice is a configuration, not a code path.
/// Contract is that of <c>EmbeddingBag.Forward</c>: CSR <paramref name="offsets"/> of length bags + 1 with
/// offsets[0] == 0 and offsets[bags] == indices.Length; output holds bags × table.Dim floats; bad input throws, and
/// leaves no partial sums: bad offsets, weights or output length before anything is written, an index outside the
/// table (which a kernel may find in its loop) with the output's bags × dim floats zeroed.</summary>
internal interface IEmbeddingBackend : IDisposable
{
    /// <summary>Short name shown in stats and logs ("cpu-avx512", "pim-emulated", ...).</summary>
    string Name { get; }

    void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                 PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default);

    /// <summary>Pools several tables' batches, each into its own range of <paramref name="output"/>
    /// (<see cref="TableLookup.OutputStart"/>, <c>bags × dim</c> floats): how a model pools all its tables for one batch.
    /// Every lookup is validated before any output is written. This default runs <see cref="Forward"/> per table; a
    /// backend that gains from seeing the tables together overrides it (PIM: one push, launch and pull per DPU set
    /// instead of one per table).</summary>
    void ForwardTables(IReadOnlyList<TableLookup> lookups, Span<float> output)
    {
        TableLookup.Validate(lookups, output.Length);
        foreach (var q in lookups)
            Forward(q.Table, q.Indices.Span, q.Offsets.Span, output[q.OutputStart..], q.Pooling, q.Weights.Span);
    }
}
