using LiveDlrm.Embeddings;

namespace LiveDlrm.Online;

/// <summary>Configuration of a <see cref="LiveModel"/>.</summary>
internal sealed record LiveModelOptions
{
    /// <summary>The trainer and its adapters (rank, budget, learning rates, queue, data reuse, last layer).</summary>
    public OnlineTrainerOptions Trainer { get; init; } = new();
    /// <summary>Served requests remembered for their label at most; beyond it the oldest expire (counted).</summary>
    public int RingCapacity { get; init; } = 1 << 18;
    /// <summary>Makes the backend that pools the base rows (tables without an adapter, and under the adapter term of
    /// an adapted table over a PIM backend); owned by the live model. Null = the CPU kernels on the shared worker
    /// pool.</summary>
    public Func<IEmbeddingBackend>? BaseBackend { get; init; }

    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Trainer, nameof(Trainer));
        Trainer.Validate();
        if (RingCapacity < 1) throw new ArgumentOutOfRangeException(nameof(RingCapacity), RingCapacity, "live model RingCapacity must be ≥ 1");
    }
}
