using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The LoRA-augmented embedding bag: <c>out_b = s_b·(Σ_j w_j W[i_j] + (Σ_j w_j A[i_j])·B)</c> — the base
/// rows and the rank-space vectors are accumulated separately, then one rank × dim product per bag (skipped for bags
/// that touch no adapted row). Same CSR contract and validation as <c>EmbeddingBag.Forward</c>: the shape is checked
/// before anything is written, the indices by the kernels' W loops (one predicted compare each, as in the plain
/// lookup, instead of a pass of their own — profiled at 0.14 of the plain lookup's time); an index outside the table
/// zeroes the output's bags × dim floats and throws naming it. fp32, fp16 and int8-rowwise rows.
///
/// Rows of 1–4 whole vectors take the register kernel (<see cref="LoraBagKernel"/>): per block of bags the plain
/// kernel's W loop, the adapter's presence filter and map probes, the A sums and B products in separate passes,
/// validated as a whole against the generation's write epoch (redone row by row under the slot seqlocks when a write
/// overlapped). Other dims take <see cref="GenericKernel{TF}"/>, which reads every adapted row's W and A as one
/// seqlock snapshot. Either way a concurrent merge is seen entirely or not at all.</summary>
internal static unsafe class LoraEmbeddingBag
{
    /// <param name="pool">Worker threads to spread the bags over, as for <c>EmbeddingBag.Forward</c>; null uses
    /// <see cref="EmbeddingWorkerPool.Shared"/>, a pool with 0 threads runs on the calling thread.</param>
    public static void Forward(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, EmbeddingWorkerPool? pool = null)
        => Run(adapter, indices, offsets, output, pooling, weights, pool, null);

    /// <summary>The lookup with <paramref name="known"/> slots given ahead (see <see cref="LoraKnownSlots"/>).</summary>
    internal static void Run(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                             PoolingMode pooling, ReadOnlySpan<float> weights, EmbeddingWorkerPool? pool, LoraKnownSlots? known)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.ValidateShape(table, indices, offsets, output.Length, pooling, weights);
        if (bags == 0) return;
        var g = adapter.Pin();
        bool ok;
        try
        {
            fixed (float* pb = Volatile.Read(ref g.B))
            fixed (int* ps = known?.Slots)
            {
                var ctx = LoraContext.Of(g, pb);
                var isa = EmbeddingKernels.CurrentIsa;
                ctx.ValidateW = adapter.ServesHotRowsFromW;
                ctx.NativeRows = EmbeddingKernels.ImplementationFor(table.Storage) == KernelImplementation.Native && EmbeddingKernels.IsNativeSupported(isa);
                if (known != null)
                {
                    known.CheckCurrent(g, isa, table.Dim);
                    ctx.KnownSlots = ps;
                }
                var kernel = LoraBagKernel.Fits(isa, table.Dim) ? LoraBagKernel.Select(isa, table.Storage, table.Dim) : table.Storage switch
                {
                    EmbeddingStorage.Fp32 => &GenericKernel<Fp32Rows>,
                    EmbeddingStorage.Fp16 => &GenericKernel<Fp16Rows>,
                    _ => &GenericKernel<Int8RowwiseRows>,
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
                        Mean = pooling == PoolingMode.Mean, Bags = bags, PrefetchDistance = EmbeddingKernels.PrefetchDistanceOverridden ? EmbeddingKernels.PrefetchDistance : table.PrefetchDistance,
                        Kernel = kernel, Context = &ctx,
                    };
                    pool ??= EmbeddingWorkerPool.Shared;
                    if (indices.Length < EmbeddingBag.ParallelThresholdLookups || bags < 2 || pool.ThreadCount == 0 || !pool.TryRun(in job, out ok))
                        ok = job.Kernel(in job, 0, bags);
                }
            }
            GC.KeepAlive(table);
        }
        finally { TableAdapter.Unpin(g); }
        if (!ok)
        {
            // An index outside the table stopped a W loop: no partial sums are left, and the first bad index is named.
            output[..(bags * table.Dim)].Clear();
            EmbeddingBagValidation.CheckIndices(table, indices);
            throw new InvalidOperationException($"table '{table.Name}': an index went out of range during the LoRA lookup but none is out of range now; was the batch modified concurrently?");
        }
    }

    /// <summary>Any dim, any storage: the bag's output accumulates in a stack buffer instead of registers. Adapted
    /// rows are snapshotted (W and A under the slot's seqlock) into temporaries before they are added.</summary>
    static bool GenericKernel<TF>(in BagJob job, int bagBegin, int bagEnd) where TF : IRowFormat
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* idx = (long*)job.Indices, off = (long*)job.Offsets;
        int dim = job.Dim, rank = ctx->Rank, distance = job.PrefetchDistance;
        long stride = job.Stride;
        ulong rows = (ulong)job.Rows;
        byte* data = job.Table;
        long rangeEnd = off[bagEnd];
        float* acc = stackalloc float[dim];
        float* w = stackalloc float[dim];
        float* aAcc = stackalloc float[rank];
        float* a = stackalloc float[rank];
        var snapshot = new ARowSnapshot { A = new ASnapshot { Rank = rank, Copy = a }, Storage = StorageOf<TF>(), Dim = dim, W = w };
        var spin = new SpinWait();
        for (int bag = bagBegin; bag < bagEnd; bag++)
        {
            // Hot rows served from W: the bag is read between two equal, even epochs (see LoraPerRowBag.Bag).
            int epoch = ctx->ValidateW ? Volatile.Read(ref *ctx->WriteEpoch) : 0;
            if ((epoch & 1) != 0) { spin.SpinOnce(sleep1Threshold: -1); bag--; continue; }
            long start = off[bag], end = off[bag + 1];
            new Span<float>(acc, dim).Clear();
            bool adapted = false;
            for (long j = start; j < end; j++)
            {
                long row = idx[j];
                if ((ulong)row >= rows) return false;
                if (distance > 0)
                {
                    RowPrefetch.Ahead(idx, j, distance, rangeEnd, data, stride);
                    if (Sse.IsSupported && j + distance < rangeEnd) Sse.Prefetch0(ctx->Filter + AdapterGeneration.FilterWord(idx[j + distance], ctx->FilterShift));
                }
                byte* src = data + row * stride;
                float weight = job.Weights == null ? 1f : job.Weights[j];
                int slot = ctx->Find(row);
                snapshot.Row = src;
                snapshot.A.Source = ctx->AOf(Math.Max(slot, 0));
                if (slot >= 0 && SlotSeqlock.TryRead(ctx->Records + slot, row, ref snapshot))
                {
                    if (!adapted) { new Span<float>(aAcc, rank).Clear(); adapted = true; }
                    LoraMath.Axpy(weight, w, acc, dim);
                    LoraMath.Axpy(weight, a, aAcc, rank);
                }
                else StoredRows.AddRow<TF>(src, weight, acc, dim);
            }
            if (adapted)
                for (int k = 0; k < rank; k++) LoraMath.Axpy(aAcc[k], ctx->B + k * dim, acc, dim);
            if (ctx->ValidateW)
            {
                Volatile.ReadBarrier();
                if (Volatile.Read(ref *ctx->WriteEpoch) != epoch) { bag--; continue; }
            }
            float* o = job.Output + (long)bag * dim;
            float scale = job.Mean && end > start ? 1f / (end - start) : 1f;
            for (int c = 0; c < dim; c++) o[c] = acc[c] * scale;
        }
        return true;
    }

    static EmbeddingStorage StorageOf<TF>() where TF : IRowFormat =>
        typeof(TF) == typeof(Fp32Rows) ? EmbeddingStorage.Fp32 : typeof(TF) == typeof(Fp16Rows) ? EmbeddingStorage.Fp16 : EmbeddingStorage.Int8Rowwise;
}
