using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>Raw view of one pinned adapter generation for the kernels (pointers only, so it can sit on the caller's
/// stack and be reached through <see cref="BagJob.Context"/> from the pool's workers).</summary>
internal unsafe struct LoraContext
{
    public long* Map;
    public long MapMask;
    public int MapShift;
    public byte* Pool;
    public ulong* Filter;
    public int FilterShift;
    public int SlotStride;
    public int Rank;
    /// <summary>B snapshot, rank × dim row-major (a pinned managed array).</summary>
    public float* B;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Bucket(long row) => (long)(((ulong)row * 0x9E3779B97F4A7C15UL) >> MapShift);

    /// <summary>Same probe as <see cref="AdapterGeneration.Find"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(long row)
    {
        if (!AdapterGeneration.MayContain(Filter, FilterShift, row)) return -1;
        long key = row + 1;
        long pos = Bucket(row);
        while (true)
        {
            long e = Volatile.Read(ref Map[pos]);
            if (e == AdapterGeneration.Empty) return -1;
            if (e >> AdapterGeneration.SlotBits == key) return (int)(e & AdapterGeneration.SlotMask);
            pos = (pos + 1) & MapMask;
        }
    }
}

/// <summary>The fused LoRA bag kernel at one vector width and row format, on the embedding kernels' own SIMD
/// abstractions (<see cref="ISimd{TV}"/>, <see cref="IRowFormat"/>) and worker pool. For rows of 1–4 whole vectors
/// (dim 16/32/48/64 at AVX-512, 8..32 at AVX2) the bag's output stays in registers as in the plain kernel; per index it
/// adds one test of the adapter's presence filter (its word prefetched with the row, <see cref="BagJob.PrefetchDistance"/> ahead) and,
/// for the rows that pass it (adapted rows and a few percent of false positives), one map probe. An adapted row is
/// read under its slot's seqlock into temporaries — W[row] and A[row] from one consistent snapshot — and only then
/// added, so a retry never double-adds. The bag's rank-space sum meets B once at the end. Other dims use
/// <see cref="LoraEmbeddingBag"/>'s generic path.</summary>
internal static unsafe class LoraBagKernel
{
    /// <summary>True when <paramref name="dim"/> fits the register path at <paramref name="isa"/>.</summary>
    public static bool Fits(KernelIsa isa, int dim)
    {
        int w = isa switch { KernelIsa.Vector512 => 16, KernelIsa.Vector256 => 8, KernelIsa.Vector128 => 4, _ => 0 };
        return w > 0 && dim % w == 0 && dim / w is >= 1 and <= 4;
    }

    public static delegate*<in BagJob, int, int, bool> Select(KernelIsa isa, EmbeddingStorage storage) => isa switch
    {
        KernelIsa.Vector512 => storage switch
        {
            EmbeddingStorage.Fp32 => &Run<Simd512, Vector512<float>, Fp32Rows>,
            EmbeddingStorage.Fp16 => &Run<Simd512, Vector512<float>, Fp16Rows>,
            _ => &Run<Simd512, Vector512<float>, Int8RowwiseRows>,
        },
        KernelIsa.Vector256 => storage switch
        {
            EmbeddingStorage.Fp32 => &Run<Simd256, Vector256<float>, Fp32Rows>,
            EmbeddingStorage.Fp16 => &Run<Simd256, Vector256<float>, Fp16Rows>,
            _ => &Run<Simd256, Vector256<float>, Int8RowwiseRows>,
        },
        KernelIsa.Vector128 => storage switch
        {
            EmbeddingStorage.Fp32 => &Run<Simd128, Vector128<float>, Fp32Rows>,
            EmbeddingStorage.Fp16 => &Run<Simd128, Vector128<float>, Fp16Rows>,
            _ => &Run<Simd128, Vector128<float>, Int8RowwiseRows>,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(isa), isa, "the LoRA register kernel needs a vector ISA"),
    };

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static bool Run<TS, TV, TF>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* indices = (long*)job.Indices;
        long* offsets = (long*)job.Offsets;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = dim / w, distance = job.PrefetchDistance, rank = ctx->Rank;
        // Locals, not ctx-> loads: the JIT cannot prove the stores to aAcc leave *ctx alone, so it would reload per index.
        long* map = ctx->Map;
        long mapMask = ctx->MapMask;
        int mapShift = ctx->MapShift, slotStride = ctx->SlotStride;
        byte* slots = ctx->Pool;
        ulong* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        long rangeEnd = offsets[bagEnd];
        float* aAcc = stackalloc float[rank];
        float* aRow = stackalloc float[rank];
        for (int b = bagBegin; b < bagEnd; b++)
        {
            long start = offsets[b], end = offsets[b + 1];
            TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
            float biasSum = 0;
            bool adapted = false;
            for (long j = start; j < end; j++)
            {
                if (Sse.IsSupported && distance > 0 && j + distance < rangeEnd)
                {
                    long ahead = indices[j + distance];
                    byte* line = (byte*)((nuint)(table + ahead * stride) & ~(nuint)63);
                    byte* last = table + ahead * stride + stride - 1;
                    for (; line <= last; line += 64) Sse.Prefetch0(line);
                    Sse.Prefetch0(filter + (AdapterGeneration.FilterBit(ahead, filterShift) >> 6));
                }
                long r = indices[j];
                byte* row = table + r * stride;
                float weight = weights == null ? 1f : weights[j];
                int slot = -1;
                long bit = AdapterGeneration.FilterBit(r, filterShift);
                if ((filter[bit >> 6] & (1UL << (int)(bit & 63))) != 0)
                for (long pos = (long)(((ulong)r * 0x9E3779B97F4A7C15UL) >> mapShift); ; pos = (pos + 1) & mapMask)
                {
                    long e = Volatile.Read(ref map[pos]);
                    if (e == AdapterGeneration.Empty) break;
                    if (e >> AdapterGeneration.SlotBits == r + 1) { slot = (int)(e & AdapterGeneration.SlotMask); break; }
                }
                if (slot >= 0)
                {
                    byte* p = slots + (long)slot * slotStride;
                    int* seq = (int*)(p + SlotLayout.SeqOffset);
                    TV t0 = TS.Zero, t1 = TS.Zero, t2 = TS.Zero, t3 = TS.Zero;
                    bool mine;
                    var spin = new SpinWait();
                    while (true)
                    {
                        int s1 = Volatile.Read(ref *seq);
                        if ((s1 & 1) == 0)
                        {
                            mine = *(long*)(p + SlotLayout.RowOffset) == r;
                            if (mine)
                            {
                                TF.RowFactors(row, dim, 1f, out float sc, out float bi);
                                TV vs = TS.Broadcast(sc), vb = TS.Broadcast(bi);
                                t0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), vs, vb);
                                if (nv > 1) t1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), vs, vb);
                                if (nv > 2) t2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), vs, vb);
                                if (nv > 3) t3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), vs, vb);
                                Buffer.MemoryCopy(p + SlotLayout.AOffset, aRow, rank * sizeof(float), rank * sizeof(float));
                            }
                            Volatile.ReadBarrier();
                            if (*seq == s1) break;
                        }
                        spin.SpinOnce(sleep1Threshold: -1);
                    }
                    if (mine)
                    {
                        TV vw = TS.Broadcast(weight);
                        a0 = TS.MultiplyAdd(t0, vw, a0);
                        if (nv > 1) a1 = TS.MultiplyAdd(t1, vw, a1);
                        if (nv > 2) a2 = TS.MultiplyAdd(t2, vw, a2);
                        if (nv > 3) a3 = TS.MultiplyAdd(t3, vw, a3);
                        if (!adapted) { new Span<float>(aAcc, rank).Clear(); adapted = true; }
                        LoraMath.Axpy(weight, aRow, aAcc, rank);
                        continue;
                    }
                }
                TF.RowFactors(row, dim, weight, out float scale, out float bias);
                TV s = TS.Broadcast(scale);
                a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), s, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), s, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), s, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), s, a3);
                if (TF.HasBias) biasSum += bias;
            }
            if (TF.HasBias)
            {
                TV bv = TS.Broadcast(biasSum);
                a0 = TS.Add(a0, bv); a1 = TS.Add(a1, bv); a2 = TS.Add(a2, bv); a3 = TS.Add(a3, bv);
            }
            if (adapted)
            {
                float* bRow = ctx->B;
                for (int k = 0; k < rank; k++, bRow += dim)
                {
                    TV c = TS.Broadcast(aAcc[k]);
                    a0 = TS.MultiplyAdd(TS.LoadFp32(bRow), c, a0);
                    if (nv > 1) a1 = TS.MultiplyAdd(TS.LoadFp32(bRow + w), c, a1);
                    if (nv > 2) a2 = TS.MultiplyAdd(TS.LoadFp32(bRow + 2 * w), c, a2);
                    if (nv > 3) a3 = TS.MultiplyAdd(TS.LoadFp32(bRow + 3 * w), c, a3);
                }
            }
            if (job.Mean && end > start)
            {
                TV m = TS.Broadcast(1f / (end - start));
                a0 = TS.Multiply(a0, m); a1 = TS.Multiply(a1, m); a2 = TS.Multiply(a2, m); a3 = TS.Multiply(a3, m);
            }
            float* output = job.Output + (long)b * dim;
            TS.Store(a0, output);
            if (nv > 1) TS.Store(a1, output + w);
            if (nv > 2) TS.Store(a2, output + 2 * w);
            if (nv > 3) TS.Store(a3, output + 3 * w);
        }
        return true;
    }
}
