using System.Numerics;
using System.Runtime.CompilerServices;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The adapter term alone: <c>out_b += s_b·(Σ_j w_j A[i_j])·B</c>, for a backend that pools the base rows
/// Σ W itself from its own copy (e.g. DPU MRAM, <see cref="IBaseCopyBackend"/>) — the host adds only the low-rank
/// update, so fresh adapters need no rewrite of that copy. Same CSR contract and validation as
/// <see cref="LoraEmbeddingBag.Forward"/>; output must already hold the pooled base (already scaled for Mean).
///
/// Per index: one presence-filter test and, for rows that pass it, one map probe; an adapted row's A is read under
/// its slot's seqlock (owner row re-checked, retry on a concurrent write), never W. The bag's rank-space sum meets B
/// once (rank × dim FMAs, Vector512 → Vector256 → scalar) and only for bags that touched an adapted row.</summary>
public static unsafe class LoraAdapterTerm
{
    /// <param name="pool">Workers to spread the bags over; null = <see cref="EmbeddingWorkerPool.Shared"/>, 0 threads = inline.</param>
    public static void Add(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                           PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, EmbeddingWorkerPool? pool = null)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        if (bags == 0) return;
        var g = adapter.Pin();
        try
        {
            fixed (float* pb = Volatile.Read(ref g.B))
            {
                var ctx = new TermContext
                {
                    Map = g.MapPointer, MapMask = g.MapCapacity - 1, MapShift = 64 - BitOperations.Log2((ulong)g.MapCapacity),
                    Pool = g.PoolPointer, SlotStride = g.SlotStride, Rank = g.Rank, B = pb,
                    Filter = g.FilterPointer, FilterShift = g.FilterShift,
                };
                fixed (long* pi = indices)
                fixed (long* po = offsets)
                fixed (float* pw = weights)
                fixed (float* pout = output)
                {
                    var job = new BagJob
                    {
                        Table = table.DataPointer, Rows = table.Rows, Stride = table.RowStride, Dim = table.Dim,
                        Indices = pi, Offsets = po, Output = pout, Weights = pooling == PoolingMode.WeightedSum ? pw : null,
                        Mean = pooling == PoolingMode.Mean, Bags = bags, Kernel = &Kernel, Context = &ctx,
                    };
                    pool ??= EmbeddingWorkerPool.Shared;
                    if (indices.Length < EmbeddingBag.ParallelThresholdLookups || bags < 2 || pool.ThreadCount == 0 || !pool.TryRun(in job, out _))
                        job.Kernel(in job, 0, bags);
                }
            }
            GC.KeepAlive(table);
        }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>The pinned generation's pointers for one call (lives on the caller's stack).</summary>
    struct TermContext
    {
        public long* Map;
        public long MapMask;
        public int MapShift;
        public byte* Pool;
        public ulong* Filter;
        public int FilterShift;
        public int SlotStride;
        public int Rank;
        public float* B;

        /// <summary>Same probe as <see cref="AdapterGeneration.Find"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Find(long row)
        {
            if (!AdapterGeneration.MayContain(Filter, FilterShift, row)) return -1;
            long key = row + 1;
            long pos = (long)(((ulong)row * 0x9E3779B97F4A7C15UL) >> MapShift);
            while (true)
            {
                long e = Volatile.Read(ref Map[pos]);
                if (e == AdapterGeneration.Empty) return -1;
                if (e >> AdapterGeneration.SlotBits == key) return (int)(e & AdapterGeneration.SlotMask);
                pos = (pos + 1) & MapMask;
            }
        }
    }

    static bool Kernel(in BagJob job, int bagBegin, int bagEnd)
    {
        TermContext* ctx = (TermContext*)job.Context;
        long* idx = (long*)job.Indices, off = (long*)job.Offsets;
        int dim = job.Dim, rank = ctx->Rank;
        float* aAcc = stackalloc float[rank];
        float* a = stackalloc float[rank];
        for (int bag = bagBegin; bag < bagEnd; bag++)
        {
            long start = off[bag], end = off[bag + 1];
            bool adapted = false;
            for (long j = start; j < end; j++)
            {
                long row = idx[j];
                int slot = ctx->Find(row);
                if (slot < 0 || !ReadA(ctx, slot, row, a)) continue;
                if (!adapted) { new Span<float>(aAcc, rank).Clear(); adapted = true; }
                LoraMath.Axpy(job.Weights == null ? 1f : job.Weights[j], a, aAcc, rank);
            }
            if (!adapted) continue;
            float scale = job.Mean ? 1f / (end - start) : 1f;
            float* o = job.Output + (long)bag * dim;
            for (int k = 0; k < rank; k++) LoraMath.Axpy(aAcc[k] * scale, ctx->B + (long)k * dim, o, dim);
        }
        return true;
    }

    /// <summary>Seqlock read of a slot's A (no W: the base comes from elsewhere). False when the slot no longer
    /// belongs to <paramref name="row"/> (merged or reused since the probe).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool ReadA(TermContext* ctx, int slot, long row, float* a)
    {
        byte* p = ctx->Pool + (long)slot * ctx->SlotStride;
        int* seq = (int*)(p + SlotLayout.SeqOffset);
        var spin = new SpinWait();
        while (true)
        {
            int s1 = Volatile.Read(ref *seq);
            if ((s1 & 1) == 0)
            {
                bool mine = *(long*)(p + SlotLayout.RowOffset) == row;
                if (mine) Buffer.MemoryCopy(p + SlotLayout.AOffset, a, ctx->Rank * sizeof(float), ctx->Rank * sizeof(float));
                Volatile.ReadBarrier();
                if (*seq == s1) return mine;
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}

/// <summary>The scalar twin of <see cref="LoraAdapterTerm"/> and its test oracle: per index the row's own update
/// A[i]·B is formed (no rank-space accumulation) and pooled as <see cref="EmbeddingBagReference"/> pools.</summary>
public static unsafe class LoraAdapterTermReference
{
    public static void Add(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                           PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        int dim = table.Dim;
        var g = adapter.Pin();
        try
        {
            float[] b = Volatile.Read(ref g.B);
            var a = new float[g.Rank];
            var w = new float[dim];   // ReadSlot's W snapshot, unused here
            var delta = new float[dim];
            fixed (float* pa = a)
            fixed (float* pw = w)
            {
                for (int bag = 0; bag < bags; bag++)
                {
                    int start = (int)offsets[bag], end = (int)offsets[bag + 1];
                    float scale = pooling == PoolingMode.Mean && end > start ? 1f / (end - start) : 1f;
                    for (int j = start; j < end; j++)
                    {
                        long i = indices[j];
                        int slot = g.Find(i);
                        if (slot < 0 || !TableAdapter.ReadSlot(g, slot, i, table, pa, pw)) continue;
                        for (int d = 0; d < dim; d++)
                        {
                            float sum = 0;
                            for (int k = 0; k < g.Rank; k++) sum += a[k] * b[k * dim + d];
                            delta[d] = sum;
                        }
                        float weight = (pooling == PoolingMode.WeightedSum ? weights[j] : 1f) * scale;
                        for (int d = 0; d < dim; d++) output[bag * dim + d] += weight * delta[d];
                    }
                }
            }
        }
        finally { TableAdapter.Unpin(g); }
    }
}
