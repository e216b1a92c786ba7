namespace LiveDlrm.Embeddings;

/// <summary>A backend that pools from its own copy of the base rows (DPU MRAM for the PIM backend), not from the
/// <see cref="EmbeddingTable"/>'s memory. Its <see cref="IEmbeddingBackend.Forward"/> returns the pooled base Σ W of
/// that copy, so a LoRA adapter is added on top by the host (<c>Online.AdapterEmbeddingBackend</c> does this), and
/// a change written to the host table reaches lookups only once it is pushed with <see cref="UpdateBaseRows"/>.</summary>
internal interface IBaseCopyBackend : IEmbeddingBackend
{
    /// <summary>Copies the host table's current values of <paramref name="rows"/> into the backend's copy, in one
    /// batch. A table the backend has not loaded yet needs nothing: its first load reads the host table.</summary>
    void UpdateBaseRows(EmbeddingTable table, ReadOnlySpan<long> rows);
}
