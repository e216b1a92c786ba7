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

/// <summary>Vectors per row as a type, so the JIT folds the 1–4 register branches out of the per-index loop.</summary>
internal interface IVectorCount { static abstract int N { get; } }
internal struct One : IVectorCount { public static int N => 1; }
internal struct Two : IVectorCount { public static int N => 2; }
internal struct Three : IVectorCount { public static int N => 3; }
internal struct Four : IVectorCount { public static int N => 4; }

/// <summary>The fused LoRA bag kernel at one vector width and row format, on the embedding kernels' own SIMD
/// abstractions (<see cref="ISimd{TV}"/>, <see cref="IRowFormat"/>) and worker pool. For rows of 1–4 whole vectors
/// (dim 16/32/48/64 at AVX-512, 8..32 at AVX2) the bag's output stays in registers as in the plain kernel; per index it
/// adds one test of the adapter's presence filter (L2-resident for a 1 % budget, so it is not prefetched: out-of-order
/// execution hides an L2 hit, and the prefetch's hash would cost more µops than it saves) and,
/// for the rows that pass it (adapted rows and a few percent of false positives), one map probe. An adapted row is
/// read under its slot's seqlock into temporaries — W[row] and A[row] from one consistent snapshot — and only then
/// added, so a retry never double-adds. The bag's rank-space sum meets B once at the end. Other dims use
/// <see cref="LoraEmbeddingBag"/>'s generic path.</summary>
internal static unsafe class LoraBagKernel
{
    /// <summary>Slot of <paramref name="row"/> or -1: presence filter first, then the map (same probe as
    /// <see cref="AdapterGeneration.Find"/>, on locals).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Probe(long row, ulong* filter, int filterShift, long* map, long mapMask, int mapShift)
    {
        long bit = AdapterGeneration.FilterBit(row, filterShift);
        if ((filter[bit >> 6] & (1UL << (int)(bit & 63))) == 0) return -1;
        for (long pos = (long)(((ulong)row * 0x9E3779B97F4A7C15UL) >> mapShift); ; pos = (pos + 1) & mapMask)
        {
            long e = Volatile.Read(ref map[pos]);
            if (e == AdapterGeneration.Empty) return -1;
            if (e >> AdapterGeneration.SlotBits == row + 1) return (int)(e & AdapterGeneration.SlotMask);
        }
    }

    /// <summary>True when <paramref name="dim"/> fits the register path at <paramref name="isa"/>.</summary>
    public static bool Fits(KernelIsa isa, int dim)
    {
        int w = isa switch { KernelIsa.Vector512 => 16, KernelIsa.Vector256 => 8, KernelIsa.Vector128 => 4, _ => 0 };
        return w > 0 && dim % w == 0 && dim / w is >= 1 and <= 4;
    }

    public static delegate*<in BagJob, int, int, bool> Select(KernelIsa isa, EmbeddingStorage storage, int dim) => isa switch
    {
        KernelIsa.Vector512 => ByFormat<Simd512, Vector512<float>>(storage, dim / 16),
        KernelIsa.Vector256 => ByFormat<Simd256, Vector256<float>>(storage, dim / 8),
        KernelIsa.Vector128 => ByFormat<Simd128, Vector128<float>>(storage, dim / 4),
        _ => throw new ArgumentOutOfRangeException(nameof(isa), isa, "the LoRA register kernel needs a vector ISA"),
    };

    static delegate*<in BagJob, int, int, bool> ByFormat<TS, TV>(EmbeddingStorage storage, int vectors)
        where TS : ISimd<TV> where TV : struct => storage switch
    {
        EmbeddingStorage.Fp32 => ByCount<TS, TV, Fp32Rows>(vectors),
        EmbeddingStorage.Fp16 => ByCount<TS, TV, Fp16Rows>(vectors),
        _ => ByCount<TS, TV, Int8RowwiseRows>(vectors),
    };

    static delegate*<in BagJob, int, int, bool> ByCount<TS, TV, TF>(int vectors)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat => vectors switch
    {
        1 => &Run<TS, TV, TF, One>,
        2 => &Run<TS, TV, TF, Two>,
        3 => &Run<TS, TV, TF, Three>,
        4 => &Run<TS, TV, TF, Four>,
        _ => throw new ArgumentOutOfRangeException(nameof(vectors), vectors, "the LoRA register kernel holds 1–4 vectors per row"),
    };

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static bool Run<TS, TV, TF, TN>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* indices = (long*)job.Indices;
        long* offsets = (long*)job.Offsets;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = TN.N, distance = job.PrefetchDistance, rank = ctx->Rank;
        // Locals, not ctx-> loads: the JIT cannot prove the stores to aAcc leave *ctx alone, so it would reload per index.
        long* map = ctx->Map;
        long mapMask = ctx->MapMask;
        int mapShift = ctx->MapShift, slotStride = ctx->SlotStride;
        byte* slots = ctx->Pool;
        ulong* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        long rangeEnd = offsets[bagEnd];
        // Rank ≤ 16 (the common case): the bag's Σ A[i] lives in two 8-float registers and each A[i] is loaded
        // straight from its slot. A slot pads A to a multiple of 8 floats (SlotLayout.StrideFor), so the loads stay
        // inside the slot; lanes ≥ rank are never used (only aAcc[0..rank) feeds the B product).
        bool vecA = rank <= 16;
        float* aAcc = stackalloc float[Math.Max(rank, 16)];
        float* aRow = stackalloc float[rank];
        for (int b = bagBegin; b < bagEnd; b++)
        {
            long start = offsets[b], end = offsets[b + 1];
            TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
            Vector256<float> sumA0 = Vector256<float>.Zero, sumA1 = Vector256<float>.Zero;
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
                }
                long r = indices[j];
                byte* row = table + r * stride;
                float weight = weights == null ? 1f : weights[j];
                int slot = Probe(r, filter, filterShift, map, mapMask, mapShift);
                if (slot >= 0)
                {
                    byte* p = slots + (long)slot * slotStride;
                    int* seq = (int*)(p + SlotLayout.SeqOffset);
                    TV t0 = TS.Zero, t1 = TS.Zero, t2 = TS.Zero, t3 = TS.Zero;
                    Vector256<float> r0 = Vector256<float>.Zero, r1 = Vector256<float>.Zero;
                    bool mine;
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
                                float* slotA = (float*)(p + SlotLayout.AOffset);
                                if (vecA)
                                {
                                    r0 = Vector256.Load(slotA);
                                    if (rank > 8) r1 = Vector256.Load(slotA + 8);
                                }
                                else CopyRank(slotA, aRow, rank);
                            }
                            Volatile.ReadBarrier();
                            if (*seq == s1) break;
                        }
                        // No call anywhere in this loop (not even SpinWait on this cold path): a call makes the JIT
                        // spill the vector accumulators, which are caller-saved, around it for the whole loop.
                        if (X86Base.IsSupported) X86Base.Pause();
                    }
                    if (mine)
                    {
                        TV vw = TS.Broadcast(weight);
                        a0 = TS.MultiplyAdd(t0, vw, a0);
                        if (nv > 1) a1 = TS.MultiplyAdd(t1, vw, a1);
                        if (nv > 2) a2 = TS.MultiplyAdd(t2, vw, a2);
                        if (nv > 3) a3 = TS.MultiplyAdd(t3, vw, a3);
                        if (vecA)
                        {
                            var w8 = Vector256.Create(weight);
                            sumA0 = Vector256.FusedMultiplyAdd(r0, w8, sumA0);
                            if (rank > 8) sumA1 = Vector256.FusedMultiplyAdd(r1, w8, sumA1);
                            adapted = true;
                            continue;
                        }
                        if (!adapted) { for (int k = 0; k < rank; k++) aAcc[k] = 0; adapted = true; }
                        for (int k = 0; k < rank; k++) aAcc[k] = MathF.FusedMultiplyAdd(aRow[k], weight, aAcc[k]);
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
                if (vecA)
                {
                    sumA0.Store(aAcc);
                    sumA1.Store(aAcc + 8);
                }
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

    /// <summary>Copies n floats with plain loads and stores (inlined, no call).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void CopyRank(float* source, float* destination, int n)
    {
        int i = 0;
        for (; i <= n - 8; i += 8) Vector256.Store(Vector256.Load(source + i), destination + i);
        for (; i < n; i++) destination[i] = source[i];
    }
}
