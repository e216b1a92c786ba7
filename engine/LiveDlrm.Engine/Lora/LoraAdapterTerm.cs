using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
internal static unsafe class LoraAdapterTerm
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
                var ctx = LoraContext.Of(g, pb);
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static bool Kernel(in BagJob job, int bagBegin, int bagEnd)
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* idx = (long*)job.Indices, off = (long*)job.Offsets;
        float* weights = job.Weights;
        int dim = job.Dim, rank = ctx->Rank;
        // Locals, not ctx-> loads: the JIT cannot prove the stores below leave *ctx alone and would reload per index.
        long* map = ctx->Map;
        int mapShift = ctx->MapShift, aStride = ctx->AStride, filterShift = ctx->FilterShift;
        SlotRecord* records = ctx->Records;
        byte* aArray = ctx->A;
        uint* filter = ctx->Filter;
        float* b = ctx->B;
        // Rank ≤ 16 (the common case): the bag's Σ w·A lives in two 8-float registers (see ASnapshot); larger ranks
        // copy A out and accumulate in memory.
        bool vecA = ASnapshot.FitsRegisters(rank);
        float* aAcc = stackalloc float[Math.Max(rank, 16)];
        float* aRow = stackalloc float[rank];
        var snapshot = new ASnapshot { Rank = rank, InRegisters = vecA, Copy = aRow };
        for (int bag = bagBegin; bag < bagEnd; bag++)
        {
            long start = off[bag], end = off[bag + 1];
            var sum0 = Vector256<float>.Zero;
            var sum1 = Vector256<float>.Zero;
            bool adapted = false;
            for (long j = start; j < end; j++)
            {
                long row = idx[j];
                if (!AdapterGeneration.MayContain(filter, filterShift, row)) continue;
                int slot = AdapterGeneration.ProbeMap(row, map, mapShift);
                if (slot < 0) continue;
                snapshot.Source = (float*)(aArray + (long)slot * aStride);
                if (!SlotSeqlock.TryRead(records + slot, row, ref snapshot)) continue;   // merged or reused since the probe
                float weight = weights == null ? 1f : weights[j];
                if (vecA)
                {
                    var vw = Vector256.Create(weight);
                    sum0 = Vector256.FusedMultiplyAdd(snapshot.Low, vw, sum0);
                    if (rank > 8) sum1 = Vector256.FusedMultiplyAdd(snapshot.High, vw, sum1);
                }
                else
                {
                    if (!adapted) new Span<float>(aAcc, rank).Clear();
                    LoraMath.Axpy(weight, aRow, aAcc, rank);
                }
                adapted = true;
            }
            if (!adapted) continue;
            float scale = job.Mean ? 1f / (end - start) : 1f;
            if (vecA)
            {
                Vector256.Store(sum0 * scale, aAcc);
                Vector256.Store(sum1 * scale, aAcc + 8);
            }
            else for (int k = 0; k < rank; k++) aAcc[k] *= scale;
            AddProduct(aAcc, rank, b, dim, job.Output + (long)bag * dim);
        }
        return true;
    }

    /// <summary>o[0..dim) += Σ_k s[k]·B[k, 0..dim): columns outer, rank inner, so each output vector is loaded and
    /// stored once and only B streams through; four column vectors at a time give four independent FMA chains
    /// (one chain of rank FMAs would wait on the FMA latency at every step).</summary>
    static void AddProduct(float* s, int rank, float* b, int dim, float* o)
    {
        int c = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; c <= dim - 64; c += 64)
            {
                var acc0 = Vector512.Load(o + c);
                var acc1 = Vector512.Load(o + c + 16);
                var acc2 = Vector512.Load(o + c + 32);
                var acc3 = Vector512.Load(o + c + 48);
                for (int k = 0; k < rank; k++)
                {
                    float* bk = b + (long)k * dim + c;
                    var vs = Vector512.Create(s[k]);
                    acc0 = Vector512.FusedMultiplyAdd(Vector512.Load(bk), vs, acc0);
                    acc1 = Vector512.FusedMultiplyAdd(Vector512.Load(bk + 16), vs, acc1);
                    acc2 = Vector512.FusedMultiplyAdd(Vector512.Load(bk + 32), vs, acc2);
                    acc3 = Vector512.FusedMultiplyAdd(Vector512.Load(bk + 48), vs, acc3);
                }
                Vector512.Store(acc0, o + c);
                Vector512.Store(acc1, o + c + 16);
                Vector512.Store(acc2, o + c + 32);
                Vector512.Store(acc3, o + c + 48);
            }
            for (; c <= dim - 16; c += 16)
            {
                var acc = Vector512.Load(o + c);
                for (int k = 0; k < rank; k++) acc = Vector512.FusedMultiplyAdd(Vector512.Load(b + (long)k * dim + c), Vector512.Create(s[k]), acc);
                Vector512.Store(acc, o + c);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; c <= dim - 32; c += 32)
            {
                var acc0 = Vector256.Load(o + c);
                var acc1 = Vector256.Load(o + c + 8);
                var acc2 = Vector256.Load(o + c + 16);
                var acc3 = Vector256.Load(o + c + 24);
                for (int k = 0; k < rank; k++)
                {
                    float* bk = b + (long)k * dim + c;
                    var vs = Vector256.Create(s[k]);
                    acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(bk), vs, acc0);
                    acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(bk + 8), vs, acc1);
                    acc2 = Vector256.FusedMultiplyAdd(Vector256.Load(bk + 16), vs, acc2);
                    acc3 = Vector256.FusedMultiplyAdd(Vector256.Load(bk + 24), vs, acc3);
                }
                Vector256.Store(acc0, o + c);
                Vector256.Store(acc1, o + c + 8);
                Vector256.Store(acc2, o + c + 16);
                Vector256.Store(acc3, o + c + 24);
            }
            for (; c <= dim - 8; c += 8)
            {
                var acc = Vector256.Load(o + c);
                for (int k = 0; k < rank; k++) acc = Vector256.FusedMultiplyAdd(Vector256.Load(b + (long)k * dim + c), Vector256.Create(s[k]), acc);
                Vector256.Store(acc, o + c);
            }
        }
        for (; c < dim; c++)
        {
            float acc = o[c];
            for (int k = 0; k < rank; k++) acc = MathF.FusedMultiplyAdd(b[(long)k * dim + c], s[k], acc);
            o[c] = acc;
        }
    }
}

/// <summary>The scalar twin of <see cref="LoraAdapterTerm"/> and its test oracle: per index the row's own update
/// A[i]·B is formed (no rank-space accumulation) and pooled as <see cref="EmbeddingBagReference"/> pools.</summary>
internal static unsafe class LoraAdapterTermReference
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
