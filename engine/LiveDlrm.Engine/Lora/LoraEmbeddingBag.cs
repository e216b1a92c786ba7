using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The LoRA-augmented embedding bag: <c>out_b = s_b·(Σ_j w_j W[i_j] + (Σ_j w_j A[i_j])·B)</c> — the base
/// rows and the rank-space vectors are accumulated separately, then one rank × dim product per bag (skipped for bags
/// that touch no adapted row). Same CSR contract and validation as <c>EmbeddingBag.Forward</c>; fp32, fp16 and
/// int8-rowwise rows; Vector512 → Vector256 → scalar; software prefetch of the rows and map buckets 16 indices ahead.
///
/// Per index the added cost is one probe of the adapter map (a multiply-shift hash into a half-empty linear-probing
/// table that fits in cache for a 1 % budget). Rows that have an adapter slot are read under the slot's seqlock
/// together with their W row, so a concurrent merge is seen entirely or not at all.</summary>
public static unsafe class LoraEmbeddingBag
{
    /// <param name="pool">Worker threads to spread the bags over, as for <c>EmbeddingBag.Forward</c>; null uses
    /// <see cref="EmbeddingWorkerPool.Shared"/>, a pool with 0 threads runs on the calling thread.</param>
    public static void Forward(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, EmbeddingWorkerPool? pool = null)
        => Run(adapter, indices, offsets, output, pooling, weights, pool, null);

    /// <summary>Measurement aid (<c>./build.sh bench lora --known-slots</c>): the sum-pooled lookup with each index's
    /// slot taken from <paramref name="slots"/> (made by <see cref="ResolveSlots"/> for these very indices) instead of
    /// found through the presence filter and the map, so a benchmark can time everything but the search: the W rows,
    /// the A sums and the B products. Refused unless the adapter is exactly as it was when the slots were resolved (same generation,
    /// same write epoch) and the dim fits the register kernel.</summary>
    internal static void ForwardWithKnownSlots(TableAdapter adapter, long[] indices, ReadOnlySpan<long> offsets, Span<float> output,
                                               KnownSlots slots, EmbeddingWorkerPool? pool = null)
    {
        ArgumentNullException.ThrowIfNull(slots);
        if (!ReferenceEquals(slots.Indices, indices))
            throw new ArgumentException("known slots were resolved for another indices array", nameof(slots));
        Run(adapter, indices, offsets, output, PoolingMode.Sum, default, pool, slots);
    }

    /// <summary>The slot of every index of <paramref name="indices"/> (-1: not adapted) in the adapter's current
    /// generation, for <see cref="ForwardWithKnownSlots"/>.</summary>
    internal static KnownSlots ResolveSlots(TableAdapter adapter, long[] indices)
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
            return new KnownSlots(indices, slots, g.Version, epoch);
        }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>Slots resolved ahead for one indices array, with the generation and write epoch they hold for.</summary>
    internal sealed class KnownSlots(long[] indices, int[] slots, long version, int epoch)
    {
        public readonly long[] Indices = indices;
        /// <summary>Pinned (the kernels read it through a pointer).</summary>
        public readonly int[] Slots = slots;
        public readonly long Version = version;
        public readonly int Epoch = epoch;
    }

    static void Run(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                    PoolingMode pooling, ReadOnlySpan<float> weights, EmbeddingWorkerPool? pool, KnownSlots? known)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        if (bags == 0) return;
        var g = adapter.Pin();
        try
        {
            fixed (float* pb = Volatile.Read(ref g.B))
            fixed (int* ps = known?.Slots)
            {
                var ctx = LoraContext.Of(g, pb);
                var isa = EmbeddingKernels.CurrentIsa;
                if (known != null)
                {
                    if (known.Version != g.Version || known.Epoch != Volatile.Read(ref *g.WriteEpochPointer))
                        throw new InvalidOperationException($"known slots were resolved for generation {known.Version} at write epoch {known.Epoch}; " +
                                                            $"the adapter is now at generation {g.Version}, epoch {Volatile.Read(ref *g.WriteEpochPointer)}");
                    if (!LoraBagKernel.Fits(isa, table.Dim))
                        throw new NotSupportedException($"known slots: dim {table.Dim} does not fit the register kernel at {isa}");
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
                        Mean = pooling == PoolingMode.Mean, Bags = bags, PrefetchDistance = EmbeddingKernels.PrefetchDistanceFor(table.Storage),
                        Kernel = kernel, Context = &ctx,
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

    /// <summary>Any dim, any storage: the bag's output accumulates in a stack buffer instead of registers. Adapted
    /// rows are snapshotted (W and A under the slot's seqlock) into temporaries before they are added.</summary>
    static bool GenericKernel<TF>(in BagJob job, int bagBegin, int bagEnd) where TF : IRowFormat
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* idx = (long*)job.Indices, off = (long*)job.Offsets;
        int dim = job.Dim, rank = ctx->Rank, distance = job.PrefetchDistance;
        long stride = job.Stride;
        byte* data = job.Table;
        long rangeEnd = off[bagEnd];
        float* acc = stackalloc float[dim];
        float* w = stackalloc float[dim];
        float* aAcc = stackalloc float[rank];
        float* a = stackalloc float[rank];
        for (int bag = bagBegin; bag < bagEnd; bag++)
        {
            long start = off[bag], end = off[bag + 1];
            new Span<float>(acc, dim).Clear();
            bool adapted = false;
            for (long j = start; j < end; j++)
            {
                if (Sse.IsSupported && distance > 0 && j + distance < rangeEnd)
                {
                    long ahead = idx[j + distance];
                    byte* line = (byte*)((nuint)(data + ahead * stride) & ~(nuint)63);
                    byte* last = data + ahead * stride + stride - 1;
                    for (; line <= last; line += 64) Sse.Prefetch0(line);
                    Sse.Prefetch0(ctx->Filter + AdapterGeneration.FilterWord(ahead, ctx->FilterShift));
                }
                long row = idx[j];
                byte* src = data + row * stride;
                float weight = job.Weights == null ? 1f : job.Weights[j];
                int slot = ctx->Find(row);
                if (slot >= 0 && ReadSlot<TF>(ctx, slot, row, src, dim, a, w))
                {
                    if (!adapted) { new Span<float>(aAcc, rank).Clear(); adapted = true; }
                    LoraMath.Axpy(weight, w, acc, dim);
                    LoraMath.Axpy(weight, a, aAcc, rank);
                }
                else AddRow<TF>(src, weight, acc, dim);
            }
            if (adapted)
                for (int k = 0; k < rank; k++) LoraMath.Axpy(aAcc[k], ctx->B + k * dim, acc, dim);
            float* o = job.Output + (long)bag * dim;
            float scale = job.Mean && end > start ? 1f / (end - start) : 1f;
            for (int c = 0; c < dim; c++) o[c] = acc[c] * scale;
        }
        return true;
    }

    /// <summary>Seqlock read of one slot into temporaries (see <see cref="TableAdapter.ReadSlot"/>).</summary>
    static bool ReadSlot<TF>(LoraContext* ctx, int slot, long row, byte* src, int dim, float* a, float* w) where TF : IRowFormat
    {
        byte* p = ctx->RecordOf(slot);
        int* seq = (int*)(p + SlotLayout.SeqOffset);
        var spin = new SpinWait();
        while (true)
        {
            int s1 = Volatile.Read(ref *seq);
            if ((s1 & 1) == 0)
            {
                bool mine = *(long*)(p + SlotLayout.RowOffset) == row;
                if (mine)
                {
                    Buffer.MemoryCopy(ctx->AOf(slot), a, ctx->Rank * sizeof(float), ctx->Rank * sizeof(float));
                    new Span<float>(w, dim).Clear();
                    AddRow<TF>(src, 1f, w, dim);
                }
                Volatile.ReadBarrier();
                if (*seq == s1) return mine;
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void AddRow<TF>(byte* row, float w, float* acc, int dim) where TF : IRowFormat
    {
        if (typeof(TF) == typeof(Fp32Rows)) LoraMath.Axpy(w, (float*)row, acc, dim);
        else if (typeof(TF) == typeof(Fp16Rows)) AddFp16(row, w, acc, dim);
        else AddInt8(row, w, acc, dim);
    }

    /// <summary>W[row] dequantised into <paramref name="destination"/> (dim floats).</summary>
    internal static void Dequantise(EmbeddingTable table, long row, float* destination)
    {
        new Span<float>(destination, table.Dim).Clear();
        AddRow(table.Storage, table.DataPointer + row * table.RowStride, 1f, destination, table.Dim);
    }

    /// <summary>acc += w · row, dequantising the stored row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void AddRow(EmbeddingStorage storage, byte* row, float w, float* acc, int dim)
    {
        switch (storage)
        {
            case EmbeddingStorage.Fp32: LoraMath.Axpy(w, (float*)row, acc, dim); break;
            case EmbeddingStorage.Fp16: AddFp16(row, w, acc, dim); break;
            default: AddInt8(row, w, acc, dim); break;
        }
    }

    static void AddFp16(byte* row, float w, float* acc, int dim)
    {
        ushort* h = (ushort*)row;
        int c = 0;
        if (Avx512F.IsSupported)
        {
            var vw = Vector512.Create(w);
            for (; c <= dim - 16; c += 16)
            {
                var bits = Avx512F.ConvertToVector512Int32(Vector256.Load(h + c));
                Vector512.Store(Vector512.FusedMultiplyAdd(HalfToSingle(bits), vw, Vector512.Load(acc + c)), acc + c);
            }
        }
        if (Avx2.IsSupported)
        {
            var vw = Vector256.Create(w);
            for (; c <= dim - 8; c += 8)
            {
                var bits = Avx2.ConvertToVector256Int32(Vector128.Load(h + c));
                Vector256.Store(Vector256.FusedMultiplyAdd(HalfToSingle(bits), vw, Vector256.Load(acc + c)), acc + c);
            }
        }
        for (; c < dim; c++) acc[c] = MathF.FusedMultiplyAdd((float)BitConverter.UInt16BitsToHalf(h[c]), w, acc[c]);
    }

    /// <summary>IEEE half bits (zero-extended in int lanes) to float: move exponent+mantissa into float position and
    /// multiply by 2^112 to rebias (this also scales half subnormals correctly); Inf/NaN get the all-ones exponent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> HalfToSingle(Vector512<int> h)
    {
        var magnitude = (h & Vector512.Create(0x7fff)) << 13;
        var f = magnitude.AsSingle() * Vector512.Create(0x77800000).AsSingle();
        var special = Vector512.Equals(h & Vector512.Create(0x7c00), Vector512.Create(0x7c00));
        f = Vector512.ConditionalSelect(special.AsSingle(), (magnitude | Vector512.Create(0x7f800000)).AsSingle(), f);
        return (f.AsInt32() | ((h & Vector512.Create(0x8000)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfToSingle(Vector256<int> h)
    {
        var magnitude = (h & Vector256.Create(0x7fff)) << 13;
        var f = magnitude.AsSingle() * Vector256.Create(0x77800000).AsSingle();
        var special = Vector256.Equals(h & Vector256.Create(0x7c00), Vector256.Create(0x7c00));
        f = Vector256.ConditionalSelect(special.AsSingle(), (magnitude | Vector256.Create(0x7f800000)).AsSingle(), f);
        return (f.AsInt32() | ((h & Vector256.Create(0x8000)) << 16)).AsSingle();
    }

    static void AddInt8(byte* row, float w, float* acc, int dim)
    {
        // value = q·scale + bias, so w·value = q·(w·scale) + w·bias: the weight folds into the row's two constants.
        float scale = *(float*)(row + dim) * w, bias = *(float*)(row + dim + 4) * w;
        int c = 0;
        if (Avx512F.IsSupported)
        {
            var vs = Vector512.Create(scale);
            var vb = Vector512.Create(bias);
            for (; c <= dim - 16; c += 16)
            {
                var q = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(row + c)));
                Vector512.Store(Vector512.FusedMultiplyAdd(q, vs, Vector512.Load(acc + c) + vb), acc + c);
            }
        }
        if (Avx2.IsSupported)
        {
            var vs = Vector256.Create(scale);
            var vb = Vector256.Create(bias);
            for (; c <= dim - 8; c += 8)
            {
                var q = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(row + c));
                Vector256.Store(Vector256.FusedMultiplyAdd(q, vs, Vector256.Load(acc + c) + vb), acc + c);
            }
        }
        for (; c < dim; c++) acc[c] += row[c] * scale + bias;
    }
}
