using System.Numerics;
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

    /// <summary>The view of pinned generation <paramref name="g"/> with its B pinned at <paramref name="b"/>.</summary>
    public static LoraContext Of(AdapterGeneration g, float* b) => new()
    {
        Map = g.MapPointer, MapMask = g.MapCapacity - 1, MapShift = 64 - System.Numerics.BitOperations.Log2((ulong)g.MapCapacity),
        Pool = g.PoolPointer, SlotStride = g.SlotStride, Rank = g.Rank, B = b,
        Filter = g.FilterPointer, FilterShift = g.FilterShift,
    };

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

/// <summary>The LoRA bag kernel at one vector width and row format, on the embedding kernels' own SIMD abstractions
/// (<see cref="ISimd{TV}"/>, <see cref="IRowFormat"/>) and worker pool, for rows of 1–4 whole vectors (dim 16/32/48/64
/// at AVX-512, 8..32 at AVX2, 4..16 at SSE4): the bag's output stays in registers as in the plain kernel. The main
/// path (<see cref="Run"/>) keeps the plain kernel's lean W loop and does the adapter's work (filter, map probe, B
/// product) outside it; an adapted row's W and A are still read under its slot's seqlock as one snapshot, validated
/// for the whole bag before anything is stored. <see cref="FusedBag"/> is the row-by-row form it falls back to when a
/// slot changes under it. Other dims use <see cref="LoraEmbeddingBag"/>'s generic path.</summary>
internal static unsafe class LoraBagKernel
{
    /// <summary>Slot of <paramref name="row"/> or -1: presence filter first, then the map (same probe as
    /// <see cref="AdapterGeneration.Find"/>, on locals).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Probe(long row, ulong* filter, int filterShift, long* map, long mapMask, int mapShift)
    {
        long bit = AdapterGeneration.FilterBit(row, filterShift);
        if ((filter[bit >> 6] & (1UL << (int)(bit & 63))) == 0) return -1;
        return AdapterGeneration.ProbeMap(row, map, mapMask, mapShift);
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

    /// <summary>Per-bag test hook: when set, every bag takes the per-row path (tests compare the two paths).</summary>
    internal static volatile bool PerRowOnly;

    /// <summary>Indices per chunk of a bag: one bit each in the candidate mask.</summary>
    const int ChunkIndices = 64;

    /// <summary>Bags whose filter masks are computed ahead, together (2048 indices at pooling 32: far more than the
    /// out-of-order window, so the filter loop runs on its own).</summary>
    const int BagBlock = 64;

    /// <summary>Bags [bagBegin, bagEnd), so that the W gather stays the plain kernel's lean loop: from DRAM that loop is
    /// bound by how many rows are in flight, and every other instruction that sits in the out-of-order window among
    /// its misses cuts that number. So the adapter's work is moved out of the W loop:
    /// <list type="number">
    /// <item>per block of <see cref="BagBlock"/> bags, ahead of their W rows: the presence filter for the first 64
    /// indices of every bag (branchless, 4 at a time, into a bit mask), then the map probe of each candidate
    /// (buckets prefetched first) → the block's list of (index, slot);</item>
    /// <item>per bag: open the seqlock read of each listed slot (counter must be even; owner checked; weighted A added
    /// to the bag's rank-space sum) — the slots were prefetched while the previous bag ran;</item>
    /// <item>the W rows of every index, exactly as <see cref="BagKernel"/> adds them (<see cref="AddRows"/>);</item>
    /// <item>the counters of every slot opened are read again: W of each adapted row was read between its slot's two
    /// counter reads, so unchanged counters mean W and A came from one snapshot (a merge bumps the counter). A change,
    /// or an odd counter in step 2, sends the bag to <see cref="FusedBag"/>, which redoes it row by row.</item>
    /// </list>
    /// The bag's output (W part) is stored only after that check; the B products of a block's adapted bags are added
    /// after the block (<see cref="ApplyB"/>). Indices past 64 in a long bag take steps 1–2 inline, chunk by chunk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static bool Run<TS, TV, TF, TN>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* indices = (long*)job.Indices;
        long* offsets = (long*)job.Offsets;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = TN.N, rank = ctx->Rank;
        long* map = ctx->Map;
        long mapMask = ctx->MapMask;
        int mapShift = ctx->MapShift, slotStride = ctx->SlotStride;
        byte* slots = ctx->Pool;
        ulong* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        // Rank ≤ 16 (the common case): a bag's Σ A[i] lives in two 8-float registers.
        bool vecA = rank <= 16;
        float* aAcc = stackalloc float[Math.Max(rank, 16)];
        nint* slotAt = stackalloc nint[ChunkIndices];
        int* slotIndex = stackalloc int[ChunkIndices];
        int* seqSeen = stackalloc int[ChunkIndices];
        long rangeEnd = offsets[bagEnd];
        bool perRow = PerRowOnly;
        // Step 1 runs for a whole block before its W loops: interleaved per bag, the filter's ~5 µops an index shared
        // the window with the W misses (measured: +30 % time with an empty filter, ~+5 % as a block).
        ulong* blockMasks = stackalloc ulong[BagBlock];
        ulong* nextMasks = stackalloc ulong[BagBlock];
        bool nextMasksReady = false;
        int* foundFrom = stackalloc int[BagBlock + 1];
        int* foundSlot = stackalloc int[BagBlock * ChunkIndices];
        int* foundIndex = stackalloc int[BagBlock * ChunkIndices];
        int blockStart = bagBegin, blockEnd = bagBegin;
        // Likewise the B products (rank × dim FMAs, ~80 µops for an adapted bag at rank 16, dim 64, and about half
        // the bags of a uniform batch touch an adapted row): done after the block's W loops, from each adapted bag's
        // scaled rank-space sum kept here.
        int rankPad = vecA ? 16 : rank;
        float* blockA = stackalloc float[BagBlock * rankPad];
        int* adaptedBags = stackalloc int[BagBlock];
        int adaptedCount = 0;
        for (int b = bagBegin; b < bagEnd; b++)
        {
            if (b == blockEnd)
            {
                blockStart = b;
                blockEnd = Math.Min(bagEnd, b + BagBlock);
                int count = blockEnd - blockStart;
                if (nextMasksReady) { ulong* t = blockMasks; blockMasks = nextMasks; nextMasks = t; }
                else
                {
                    for (int i = 0; i < count; i++) blockMasks[i] = FirstChunkCandidates<TS, TV>(indices, offsets, blockStart + i, filter, filterShift);
                    for (int i = 0; i < count; i++) PrefetchBuckets(indices + offsets[blockStart + i], blockMasks[i], map, mapShift);
                }
                // The map probes of the block's first chunks, also ahead of the W loops. The slot found may be reused
                // for another row by the time the bag is processed; the owner check under the seqlock catches that.
                int found = 0;
                for (int i = 0; i < count; i++)
                {
                    foundFrom[i] = found;
                    long* ids = indices + offsets[blockStart + i];
                    for (ulong c = blockMasks[i]; c != 0; c &= c - 1)
                    {
                        int k = BitOperations.TrailingZeroCount(c);
                        int slot = AdapterGeneration.ProbeMap(ids[k], map, mapMask, mapShift);
                        if (slot < 0) continue;
                        foundSlot[found] = slot;
                        foundIndex[found++] = k;
                    }
                }
                foundFrom[count] = found;
                // The next block's filter masks and map buckets now, a whole block of W loops ahead of its probes: probed
                // right after their prefetch, the buckets were still on their way from memory. Reading the filter
                // early is safe: bits are only ever set within a generation, so a row inserted after this read is
                // seen as it was before its insert (W alone), which the per-row contract allows.
                int nextEnd = Math.Min(bagEnd, blockEnd + BagBlock);
                nextMasksReady = blockEnd < bagEnd && !perRow;
                if (nextMasksReady)
                {
                    for (int i = 0; i < nextEnd - blockEnd; i++) nextMasks[i] = FirstChunkCandidates<TS, TV>(indices, offsets, blockEnd + i, filter, filterShift);
                    for (int i = 0; i < nextEnd - blockEnd; i++) PrefetchBuckets(indices + offsets[blockEnd + i], nextMasks[i], map, mapShift);
                }
                for (int f = foundFrom[0]; f < foundFrom[1]; f++) PrefetchSlot(slots + (long)foundSlot[f] * slotStride, slotStride);
            }
            // The slots of the next bag, a bag ahead of their seqlock reads.
            if (b + 1 < blockEnd)
                for (int f = foundFrom[b + 1 - blockStart]; f < foundFrom[b + 2 - blockStart]; f++)
                    PrefetchSlot(slots + (long)foundSlot[f] * slotStride, slotStride);
            if (perRow) goto PerRow;
            if (!vecA) for (int k = 0; k < rank; k++) aAcc[k] = 0;
            long start = offsets[b], end = offsets[b + 1];
            TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
            Vector256<float> sumA0 = Vector256<float>.Zero, sumA1 = Vector256<float>.Zero;
            float biasSum = 0;
            bool adapted = false;
            for (long chunk = start; chunk < end; chunk += ChunkIndices)
            {
                long* ids = indices + chunk;
                int n = (int)Math.Min(ChunkIndices, end - chunk);
                // Pass 1 and 2a: the slots the candidates of this chunk map to (the first chunk's were found with its
                // block: filter, then map probe); for later chunks of a long bag, here.
                int opened = 0;
                if (chunk == start)
                {
                    for (int f = foundFrom[b - blockStart]; f < foundFrom[b + 1 - blockStart]; f++)
                    {
                        slotAt[opened] = (nint)(slots + (long)foundSlot[f] * slotStride);
                        slotIndex[opened++] = foundIndex[f];
                    }
                }
                else
                {
                    ulong candidates = FilterCandidates<TS, TV>(ids, n, filter, filterShift);
                    PrefetchBuckets(ids, candidates, map, mapShift);
                    for (; candidates != 0; candidates &= candidates - 1)
                    {
                        int k = BitOperations.TrailingZeroCount(candidates);
                        int slot = AdapterGeneration.ProbeMap(ids[k], map, mapMask, mapShift);
                        if (slot < 0) continue;
                        byte* p = slots + (long)slot * slotStride;
                        PrefetchSlot(p, slotStride);
                        slotAt[opened] = (nint)p;
                        slotIndex[opened++] = k;
                    }
                }
                // Pass 2b: the seqlock reads opened: counter (must be even), owner, A.
                for (int i = 0; i < opened; i++)
                {
                    byte* p = (byte*)slotAt[i];
                    int k = slotIndex[i];
                    int s1 = Volatile.Read(ref *(int*)(p + SlotLayout.SeqOffset));
                    if ((s1 & 1) != 0) goto PerRow;             // the trainer is inside this slot: the per-row path waits
                    seqSeen[i] = s1;
                    if (*(long*)(p + SlotLayout.RowOffset) != ids[k]) continue;   // slot reused for another row: W alone
                    float weight = weights == null ? 1f : weights[chunk + k];
                    float* slotA = (float*)(p + SlotLayout.AOffset);
                    if (vecA)
                    {
                        // A is padded to a multiple of 8 floats inside the slot (SlotLayout.StrideFor); lanes ≥ rank unused.
                        var w8 = Vector256.Create(weight);
                        sumA0 = Vector256.FusedMultiplyAdd(Vector256.Load(slotA), w8, sumA0);
                        if (rank > 8) sumA1 = Vector256.FusedMultiplyAdd(Vector256.Load(slotA + 8), w8, sumA1);
                    }
                    else for (int c = 0; c < rank; c++) aAcc[c] = MathF.FusedMultiplyAdd(slotA[c], weight, aAcc[c]);
                    adapted = true;
                }
                // Pass 3: the W rows, as the plain kernel adds them (its own method: in this one the many live
                // pointers would push the loop's base and stride out of registers).
                AddRows<TS, TV, TF, TN>(in job, chunk, n, rangeEnd, ref a0, ref a1, ref a2, ref a3, ref biasSum);
                // Close the slot reads: every load above completes before the counters are read again.
                if (opened > 0)
                {
                    Volatile.ReadBarrier();
                    for (int i = 0; i < opened; i++)
                        if (*(int*)(slotAt[i] + SlotLayout.SeqOffset) != seqSeen[i]) goto PerRow;
                }
            }
            if (TF.HasBias)
            {
                TV bv = TS.Broadcast(biasSum);
                a0 = TS.Add(a0, bv); a1 = TS.Add(a1, bv); a2 = TS.Add(a2, bv); a3 = TS.Add(a3, bv);
            }
            float scaleBag = job.Mean && end > start ? 1f / (end - start) : 1f;
            if (job.Mean)
            {
                TV m = TS.Broadcast(scaleBag);
                a0 = TS.Multiply(a0, m); a1 = TS.Multiply(a1, m); a2 = TS.Multiply(a2, m); a3 = TS.Multiply(a3, m);
            }
            float* output = job.Output + (long)b * dim;
            TS.Store(a0, output);
            if (nv > 1) TS.Store(a1, output + w);
            if (nv > 2) TS.Store(a2, output + 2 * w);
            if (nv > 3) TS.Store(a3, output + 3 * w);
            if (adapted)
            {
                // The rank-space sum meets B after the block (see ApplyB); the bag's scale goes with it.
                float* coefficients = blockA + (b - blockStart) * rankPad;
                if (vecA)
                {
                    var m8 = Vector256.Create(scaleBag);
                    (sumA0 * m8).Store(coefficients);
                    (sumA1 * m8).Store(coefficients + 8);
                }
                else for (int k = 0; k < rank; k++) coefficients[k] = aAcc[k] * scaleBag;
                adaptedBags[adaptedCount++] = b;
            }
            goto Next;
        PerRow:
            FusedBag<TS, TV, TF, TN>(in job, b, rangeEnd);
        Next:
            if (b + 1 == blockEnd && adaptedCount > 0)
            {
                ApplyB<TS, TV, TN>(job.Output, dim, ctx->B, rank, adaptedBags, adaptedCount, blockA, blockStart, rankPad);
                adaptedCount = 0;
            }
        }
        return true;
    }

    /// <summary>Pass 3 of <see cref="Run{TS, TV, TF, TN}"/>: adds the W rows of indices [chunk, chunk + n) to the
    /// accumulators, exactly as the plain kernel's loop does (unweighted fp32/fp16: plain adds on the row pointer).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void AddRows<TS, TV, TF, TN>(in BagJob job, long chunk, int n, long rangeEnd, ref TV acc0, ref TV acc1, ref TV acc2, ref TV acc3, ref float biasAcc)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        long* indices = (long*)job.Indices;
        long* ids = indices + chunk;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = TN.N, distance = job.PrefetchDistance;
        TV a0 = acc0, a1 = acc1, a2 = acc2, a3 = acc3;
        float biasSum = biasAcc;
        if (weights == null && !TF.HasBias)
        {
            if (Sse.IsSupported && distance > 0)
            {
                for (int k = 0; k < n; k++)
                {
                    PrefetchRow(indices, chunk + k + distance, rangeEnd, table, stride);
                    byte* row = table + ids[k] * stride;
                    a0 = TS.Add(TF.Load<TS, TV>(row, 0), a0);
                    if (nv > 1) a1 = TS.Add(TF.Load<TS, TV>(row, w), a1);
                    if (nv > 2) a2 = TS.Add(TF.Load<TS, TV>(row, 2 * w), a2);
                    if (nv > 3) a3 = TS.Add(TF.Load<TS, TV>(row, 3 * w), a3);
                }
            }
            else
            {
                for (int k = 0; k < n; k++)
                {
                    byte* row = table + ids[k] * stride;
                    a0 = TS.Add(TF.Load<TS, TV>(row, 0), a0);
                    if (nv > 1) a1 = TS.Add(TF.Load<TS, TV>(row, w), a1);
                    if (nv > 2) a2 = TS.Add(TF.Load<TS, TV>(row, 2 * w), a2);
                    if (nv > 3) a3 = TS.Add(TF.Load<TS, TV>(row, 3 * w), a3);
                }
            }
        }
        else if (weights == null)
        {
            // Unweighted int8 rowwise, as the plain kernel's lean int8 loop: scale broadcast from the row, bias summed.
            for (int k = 0; k < n; k++)
            {
                if (Sse.IsSupported && distance > 0) PrefetchRow(indices, chunk + k + distance, rangeEnd, table, stride);
                byte* row = table + ids[k] * stride;
                TV s = TS.Broadcast(Unsafe.ReadUnaligned<float>(row + (long)dim * TF.ElementBytes));
                biasSum += Unsafe.ReadUnaligned<float>(row + (long)dim * TF.ElementBytes + 4);
                a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), s, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), s, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), s, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), s, a3);
            }
        }
        else
        {
            for (int k = 0; k < n; k++)
            {
                if (Sse.IsSupported && distance > 0) PrefetchRow(indices, chunk + k + distance, rangeEnd, table, stride);
                byte* row = table + ids[k] * stride;
                TF.RowFactors(row, dim, weights == null ? 1f : weights[chunk + k], out float scale, out float bias);
                TV s = TS.Broadcast(scale);
                a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), s, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), s, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), s, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), s, a3);
                if (TF.HasBias) biasSum += bias;
            }
        }
        acc0 = a0; acc1 = a1; acc2 = a2; acc3 = a3;
        biasAcc = biasSum;
    }

    /// <summary>out_b += c_b · B for the adapted bags of a block (c_b = the bag's scaled rank-space sum).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void ApplyB<TS, TV, TN>(float* output, int dim, float* b, int rank, int* bags, int count, float* blockA, int blockStart, int rankPad)
        where TS : ISimd<TV> where TV : struct where TN : IVectorCount
    {
        int w = TS.Count, nv = TN.N;
        for (int i = 0; i < count; i++)
        {
            float* o = output + (long)bags[i] * dim;
            float* coefficients = blockA + (bags[i] - blockStart) * rankPad;
            TV a0 = TS.LoadFp32(o), a1 = nv > 1 ? TS.LoadFp32(o + w) : TS.Zero, a2 = nv > 2 ? TS.LoadFp32(o + 2 * w) : TS.Zero, a3 = nv > 3 ? TS.LoadFp32(o + 3 * w) : TS.Zero;
            float* bRow = b;
            for (int k = 0; k < rank; k++, bRow += dim)
            {
                TV c = TS.Broadcast(coefficients[k]);
                a0 = TS.MultiplyAdd(TS.LoadFp32(bRow), c, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TS.LoadFp32(bRow + w), c, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TS.LoadFp32(bRow + 2 * w), c, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TS.LoadFp32(bRow + 3 * w), c, a3);
            }
            TS.Store(a0, o);
            if (nv > 1) TS.Store(a1, o + w);
            if (nv > 2) TS.Store(a2, o + 2 * w);
            if (nv > 3) TS.Store(a3, o + 3 * w);
        }
    }

    /// <summary>Filter candidates of the first (up to) 64 indices of bag <paramref name="b"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong FirstChunkCandidates<TS, TV>(long* indices, long* offsets, int b, ulong* filter, int filterShift) where TS : ISimd<TV> where TV : struct
    {
        long start = offsets[b];
        return FilterCandidates<TS, TV>(indices + start, (int)Math.Min(ChunkIndices, offsets[b + 1] - start), filter, filterShift);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchSlot(byte* p, int slotStride)
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch0(p);
        Sse.Prefetch0(p + slotStride - 1);
    }

    /// <summary>Prefetches the home bucket of every candidate in <paramref name="candidates"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchBuckets(long* ids, ulong candidates, long* map, int mapShift)
    {
        if (!Sse.IsSupported) return;
        for (; candidates != 0; candidates &= candidates - 1)
            Sse.Prefetch0(map + (long)(((ulong)ids[BitOperations.TrailingZeroCount(candidates)] * 0x9E3779B97F4A7C15UL) >> mapShift));
    }

    /// <summary>Bit k set when ids[k] (k &lt; n ≤ 64) may have a slot: the presence filter for every index, without a
    /// branch per index. At the AVX2 and AVX-512 levels 8 indices at a time (hash with vpmulld, 32-bit filter words
    /// with vpgatherdd, the tested bit shifted to the sign and collected with vmovmskps): under 2 instructions an index
    /// plus the gather, instead of 9.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong FilterCandidates<TS, TV>(long* ids, int n, ulong* filter, int filterShift) where TS : ISimd<TV> where TV : struct
    {
        ulong candidates = 0;
        int k = 0;
        if (Avx2.IsSupported && typeof(TS) != typeof(Simd128))
        {
            // 8 indices a step: their low dwords packed into one vector (the hash only uses them), a 32-bit multiply,
            // and the filter read as 32-bit words (same bits as the 64-bit words on little-endian x86).
            var multiplier = Vector256.Create(AdapterGeneration.FilterMultiplier);
            var low5 = Vector256.Create(31u);
            uint* words32 = (uint*)filter;
            for (; k + 8 <= n; k += 8)
            {
                var first = Vector256.Load((float*)(ids + k));
                var second = Vector256.Load((float*)(ids + k + 4));
                // shufps keeps dwords 0 and 2 of each row pair: rows k, k+1, k+4, k+5 | k+2, k+3, k+6, k+7; vpermq reorders.
                var packed = Avx2.Permute4x64(Avx.Shuffle(first, second, 0b10_00_10_00).AsUInt64(), 0b11_01_10_00).AsUInt32();
                var bit = (packed * multiplier) >> filterShift;
                var words = Avx2.GatherVector256(words32, (bit >> 5).AsInt32(), 4);
                var atSign = Avx2.ShiftLeftLogicalVariable(words, Vector256.AndNot(low5, bit));
                candidates |= (ulong)atSign.ExtractMostSignificantBits() << k;
            }
        }
        for (; k < n; k++)
        {
            long bit = AdapterGeneration.FilterBit(ids[k], filterShift);
            candidates |= ((filter[bit >> 6] >> (int)bit) & 1) << k;
        }
        return candidates;
    }


    /// <summary>Touches every cache line of row indices[j] when j is still inside this thread's range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchRow(long* indices, long j, long rangeEnd, byte* table, long stride)
    {
        if (j >= rangeEnd) return;
        byte* row = table + indices[j] * stride;
        byte* line = (byte*)((nuint)row & ~(nuint)63);
        byte* last = row + stride - 1;
        for (; line <= last; line += 64) Sse.Prefetch0(line);
    }

    /// <summary>One bag, row by row: each candidate row's W and A are read inside its own slot section and retried
    /// until consistent. The fallback of <see cref="TwoPassBag{TS, TV, TF, TN}"/> when a slot it read changed (or was
    /// being written) during the bag; it waits for the writer, bounded by one slot write.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void FusedBag<TS, TV, TF, TN>(in BagJob job, int b, long rangeEnd)
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
        // Rank ≤ 16 (the common case): the bag's Σ A[i] lives in two 8-float registers and each A[i] is loaded
        // straight from its slot. A slot pads A to a multiple of 8 floats (SlotLayout.StrideFor), so the loads stay
        // inside the slot; lanes ≥ rank are never used (only aAcc[0..rank) feeds the B product).
        bool vecA = rank <= 16;
        float* aAcc = stackalloc float[Math.Max(rank, 16)];
        float* aRow = stackalloc float[rank];
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
