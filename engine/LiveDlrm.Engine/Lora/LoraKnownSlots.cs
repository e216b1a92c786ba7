using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>Measurement aid (<c>./build.sh bench lora --known-slots</c>): the slot of every index of one indices
/// array (-1: not adapted), resolved ahead in the adapter's current generation, so a benchmark can time the LoRA
/// lookup without the search (the presence filter and the map): the W rows, the A sums and the B products. Refused
/// unless the adapter is exactly as it was when the slots were resolved (same generation, same write epoch) and the
/// dim fits the register kernel.</summary>
internal sealed class LoraKnownSlots
{
    public long[] Indices { get; }
    /// <summary>Pinned (the kernels read it through a pointer).</summary>
    public int[] Slots { get; }
    public long Version { get; }
    public int Epoch { get; }

    LoraKnownSlots(long[] indices, int[] slots, long version, int epoch) => (Indices, Slots, Version, Epoch) = (indices, slots, version, epoch);

    /// <summary>The slots of <paramref name="indices"/> in <paramref name="adapter"/>'s current generation.</summary>
    public static unsafe LoraKnownSlots Resolve(TableAdapter adapter, long[] indices)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(indices);
        var g = adapter.Pin();
        try
        {
            int epoch = Volatile.Read(ref *g.WriteEpochPointer);
            if ((epoch & 1) != 0) throw new InvalidOperationException("known slots: the adapter is being written; resolve them while it is still");
            var slots = GC.AllocateUninitializedArray<int>(indices.Length, pinned: true);
            for (int i = 0; i < indices.Length; i++) slots[i] = g.Find(indices[i]);
            return new LoraKnownSlots(indices, slots, g.Version, epoch);
        }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>The sum-pooled LoRA lookup of <see cref="Indices"/> with these slots instead of the search.</summary>
    public void Forward(TableAdapter adapter, long[] indices, ReadOnlySpan<long> offsets, Span<float> output, EmbeddingWorkerPool? pool = null)
    {
        if (!ReferenceEquals(Indices, indices))
            throw new ArgumentException("known slots were resolved for another indices array", nameof(indices));
        LoraEmbeddingBag.Run(adapter, indices, offsets, output, PoolingMode.Sum, default, pool, this);
    }

    internal unsafe void CheckCurrent(AdapterGeneration g, KernelIsa isa, int dim)
    {
        int epoch = Volatile.Read(ref *g.WriteEpochPointer);
        if (Version != g.Version || Epoch != epoch)
            throw new InvalidOperationException($"known slots were resolved for generation {Version} at write epoch {Epoch}; " +
                                                $"the adapter is now at generation {g.Version}, epoch {epoch}");
        if (!LoraBagKernel.Fits(isa, dim))
            throw new NotSupportedException($"known slots: dim {dim} does not fit the register kernel at {isa}");
    }
}
