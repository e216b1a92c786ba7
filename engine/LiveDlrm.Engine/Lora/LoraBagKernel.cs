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
    /// <summary>The A array (slot × <see cref="AStride"/> bytes) and the slot records (slot × 32 bytes).</summary>
    public byte* A;
    public byte* Records;
    public uint* Filter;
    public int FilterShift;
    public int AStride;
    public int SlotCapacity;
    public int Rank;
    /// <summary>B snapshot, rank × dim row-major (a pinned managed array).</summary>
    public float* B;
    /// <summary>The generation's write epoch (see <see cref="AdapterGeneration.WriteEpochPointer"/>).</summary>
    public int* WriteEpoch;
    /// <summary>Null, or the slot of every index of the batch (-1: not adapted) given ahead by a benchmark
    /// (<see cref="LoraEmbeddingBag.ForwardWithKnownSlots"/>): blocks then skip the filter and the map probes.</summary>
    public int* KnownSlots;

    /// <summary>The view of pinned generation <paramref name="g"/> with its B pinned at <paramref name="b"/>.</summary>
    public static LoraContext Of(AdapterGeneration g, float* b) => new()
    {
        Map = g.MapPointer, MapMask = g.MapCapacity - 1, MapShift = 64 - System.Numerics.BitOperations.Log2((ulong)g.MapCapacity),
        A = g.PoolPointer, Records = g.RecordPointer, AStride = g.AStride, SlotCapacity = g.SlotCapacity, Rank = g.Rank, B = b,
        Filter = g.FilterPointer, FilterShift = g.FilterShift, WriteEpoch = g.WriteEpochPointer,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* RecordOf(int slot) => Records + (long)slot * SlotLayout.RecordBytes;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float* AOf(int slot) => (float*)(A + (long)slot * AStride);

    /// <summary>Same probe as <see cref="AdapterGeneration.Find"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(long row) =>
        AdapterGeneration.MayContain(Filter, FilterShift, row) ? AdapterGeneration.ProbeMap(row, Map, MapShift) : -1;
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
/// path (<see cref="Run"/>) keeps the plain kernel's lean W loop and does the adapter's work (filter, map probe, A
/// sums, B product) in separate passes over a block of bags, validated as a whole against the generation's write
/// epoch; <see cref="FusedBag"/> is the row-by-row form, under the per-slot seqlocks, that a block overlapping a write
/// falls back to. Other dims use <see cref="LoraEmbeddingBag"/>'s generic path.</summary>
internal static unsafe class LoraBagKernel
{
    /// <summary>Slot of <paramref name="row"/> or -1: presence filter first, then the map (same probe as
    /// <see cref="AdapterGeneration.Find"/>, on locals).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Probe(long row, uint* filter, int filterShift, long* map, int mapShift)
    {
        if (!AdapterGeneration.MayContain(filter, filterShift, row)) return -1;
        return AdapterGeneration.ProbeMap(row, map, mapShift);
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

    /// <summary>Bags per block: the unit that is resolved, served and validated together.</summary>
    const int BagBlock = 64;

    /// <summary>Bags before the end of a block at which the next block's map buckets are prefetched: late enough that
    /// they are still in L1/L2 when probed (prefetched at the block's start, a whole block of W rows evicted them again),
    /// early enough to arrive (12 bags ≈ 400 W rows; 6 and 24 were no better).</summary>
    const int BucketPrefetchLeadBags = 12;

    /// <summary>A map or A array this small stays in L2 between blocks (a quarter of a 1 MiB L2), so it is not
    /// prefetched: with most lookups adapted that is ~1400 prefetch instructions a block for lines already near, and
    /// into L1 only for the block's W loops to evict them again before the A sums (about 0.1 of the plain time at
    /// 70 % of lookups adapted on 100 k rows).</summary>
    const long CachedBytes = 256 << 10;

    /// <summary>Hits in a block (of up to <see cref="BlockIndices"/> lookups) up to which a small A array is prefetched
    /// late in the block (see <see cref="ServeBlock{TS, TV, TF, TN}"/>): 1 in 8 lookups.</summary>
    const int SparseHits = BlockIndices / 8;

    /// <summary>Most indices a block resolves at once (the hit lists live on the stack); a single bag longer than
    /// this takes the per-row path.</summary>
    const int BlockIndices = 2048;

    /// <summary>Blocks served by the fast path / redone row by row because the write epoch moved (or was odd). Counted
    /// so the concurrency test can show that both paths ran under a live writer.</summary>
    internal static long FastBlocks, RedoneBlocks;

    /// <summary>Bags [bagBegin, bagEnd) in blocks of up to <see cref="BagBlock"/> bags. Per block:
    /// <list type="number">
    /// <item>read the generation's write epoch (acquire); odd → the trainer is writing: the block goes row by row;</item>
    /// <item><see cref="FilterBlock{TS, TV}"/> (done before the previous block's W rows): the presence filter over all
    /// the block's indices (branchless, 8 at a time), the candidates' map buckets prefetched near the end of the previous
    /// block; <see cref="ProbeBlock"/>: the map probe of each candidate → the block's list of (position, slot);</item>
    /// <item><see cref="ServeBlock{TS, TV, TF, TN}"/>: the W rows of every bag of the block by the plain kernel's lean
    /// loop, back to back; then per adapted bag the A rows of its hits summed in rank space; then
    /// out_b += (s_b·Σ w A)·B for the adapted bags;</item>
    /// <item>read the epoch again after a read barrier: unchanged → nothing the block read (map, A, W of adapted rows)
    /// was written meanwhile, so every adapted row was read whole and consistent with its W; changed → the block is
    /// redone by <see cref="FusedBag"/>, the per-row path under the per-slot seqlocks (outputs are overwritten).</item>
    /// </list>
    /// So a hit costs a probe, one A load and an FMA: no per-slot counter, no owner check (a slot can only be freed
    /// and reused inside an epoch write). The trainer opens the epoch only while it publishes a step's A rows or
    /// merges (microseconds per step), so blocks rarely redo.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    static bool Run<TS, TV, TF, TN>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* offsets = (long*)job.Offsets;
        long* indices = (long*)job.Indices;
        long rangeEnd = offsets[bagEnd];
        int rankPad = ctx->Rank <= 16 ? 16 : ctx->Rank;
        // Hit lists: ProbeBlock's packing may store up to 7 entries past the count, KnownHits' up to 15.
        int* hitPos = stackalloc int[BlockIndices + 16];
        int* hitSlot = stackalloc int[BlockIndices + 16];
        // Candidate positions (filter passes) of this block and of the next; FilterBlock may store up to 7 past its count.
        int* candidates = stackalloc int[BlockIndices + 8];
        int* nextCandidates = stackalloc int[BlockIndices + 8];
        int candidateCount = 0, nextCandidateCount = 0;
        float* blockA = stackalloc float[BagBlock * rankPad];
        int* adaptedBags = stackalloc int[BagBlock];
        bool perRow = PerRowOnly, candidatesReady = false;
        // vpcompressd at the AVX-512 level only, so the kernels selected for AVX2 (and their tests) use the scalar pack.
        bool compress = Avx512F.VL.IsSupported && typeof(TS) == typeof(Simd512);
        long fast = 0, redone = 0;
        int* known = ctx->KnownSlots;
        for (int b = bagBegin, e; b < bagEnd; b = e)
        {
            e = BlockEnd(offsets, b, bagEnd);
            long from = offsets[b], n = offsets[e] - from;
            int epoch = Volatile.Read(ref *ctx->WriteEpoch);
            bool served = false, tried = !perRow && (epoch & 1) == 0 && n <= BlockIndices;
            if (tried)
            {
                int hits;
                if (known != null) hits = KnownHits(known + from, (int)n, hitPos, hitSlot);
                else
                {
                    if (!candidatesReady)
                    {
                        candidateCount = FilterBlock<TS, TV>(ctx, indices + from, (int)n, candidates);
                        PrefetchBlockBuckets(ctx, indices + from, candidates, candidateCount);
                    }
                    hits = ProbeBlock(ctx, indices + from, candidates, candidateCount, hitPos, hitSlot, compress);
                }
                // The next block's candidates now and their map buckets near this block's end, so the buckets arrive
                // while this block's W rows are read (probed right after their prefetch, they were still on their way
                // from memory). Reading the filter a block early is safe: bits are only set within a generation, so a
                // row inserted since is served as it was before its insert (W alone), which the per-row contract allows.
                candidatesReady = false;
                long* nextIds = null;
                int nextN = 0;
                if (e < bagEnd && known == null)
                {
                    long nextFrom = offsets[e], count = offsets[BlockEnd(offsets, e, bagEnd)] - nextFrom;
                    if (count <= BlockIndices)
                    {
                        nextIds = indices + nextFrom;
                        nextN = (int)count;
                        nextCandidateCount = FilterBlock<TS, TV>(ctx, nextIds, nextN, nextCandidates);
                        candidatesReady = true;
                    }
                }
                ServeBlock<TS, TV, TF, TN>(in job, b, e, from, rangeEnd, hits, hitPos, hitSlot, blockA, adaptedBags, rankPad, nextIds, nextCandidates, nextCandidateCount);
                Volatile.ReadBarrier();
                served = Volatile.Read(ref *ctx->WriteEpoch) == epoch;
                int* swap = candidates; candidates = nextCandidates; nextCandidates = swap;
                candidateCount = nextCandidateCount;
            }
            if (served) fast++;
            else
            {
                // Candidates computed ahead during the previous block were for this one: the next block computes its
                // own. (A block that tried and failed validation already swapped in the next block's candidates.)
                if (!tried) candidatesReady = false;
                redone++;
                for (int k = b; k < e; k++) FusedBag<TS, TV, TF, TN>(in job, k, rangeEnd);
            }
        }
        Interlocked.Add(ref FastBlocks, fast);
        if (redone > 0) Interlocked.Add(ref RedoneBlocks, redone);
        return true;
    }

    /// <summary>End of the block that starts at bag <paramref name="b"/>: up to <see cref="BagBlock"/> bags and
    /// <see cref="BlockIndices"/> indices, at least one bag.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int BlockEnd(long* offsets, int b, int bagEnd)
    {
        long from = offsets[b];
        int e = b + 1;
        while (e < bagEnd && e - b < BagBlock && offsets[e + 1] - from <= BlockIndices) e++;
        return e;
    }

    /// <summary>The map buckets of the candidates.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void PrefetchBlockBuckets(LoraContext* ctx, long* ids, int* candidates, int count)
    {
        if (!Sse.IsSupported || (ctx->MapMask + 1) * sizeof(long) <= CachedBytes) return;
        long* map = ctx->Map;
        int mapShift = ctx->MapShift;
        for (int i = 0; i < count; i++) Sse.Prefetch0(map + AdapterGeneration.Home(ids[candidates[i]], mapShift));
    }

    /// <summary>The hits among the candidates: <paramref name="hitPos"/>[h] = position, <paramref name="hitSlot"/>[h] =
    /// its slot, in position order (both with room for count + 8); the A rows of the hits prefetched for
    /// <see cref="ServeBlock{TS, TV, TF, TN}"/> unless the A array is small enough to stay cached
    /// (<see cref="CachedBytes"/>). Two passes: every candidate's probe result stored at the candidate's own index, then
    /// the hits packed in place (8 at a time with vpcompressd when <paramref name="compress"/>). Packing inside the probe
    /// loop made each probe's stores wait on the previous probe's outcome (the hit count), and the next probe's loads
    /// on those stores.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int ProbeBlock(LoraContext* ctx, long* ids, int* candidates, int count, int* hitPos, int* hitSlot, bool compress)
    {
        long* map = ctx->Map;
        int mapShift = ctx->MapShift;
        for (int i = 0; i < count; i++) hitSlot[i] = AdapterGeneration.ProbeMap(ids[candidates[i]], map, mapShift);
        // In place: the pack writes at hits ≤ k only what was read already (at most 8 entries from hits on).
        int hits = 0, k = 0;
        if (compress)
            for (; k + 8 <= count; k += 8)
            {
                var slots = Vector256.Load(hitSlot + k);
                var keep = Vector256.GreaterThanOrEqual(slots, Vector256<int>.Zero);
                var positions = Vector256.Load(candidates + k);
                Avx512F.VL.Compress(Vector256<int>.Zero, keep, positions).Store(hitPos + hits);
                Avx512F.VL.Compress(Vector256<int>.Zero, keep, slots).Store(hitSlot + hits);
                hits += BitOperations.PopCount(keep.ExtractMostSignificantBits());
            }
        for (; k < count; k++)
        {
            // Written unconditionally, kept only for a hit: a filter false positive costs no misprediction.
            int slot = hitSlot[k];
            hitPos[hits] = candidates[k];
            hitSlot[hits] = slot;
            hits += ~slot >>> 31;
        }
        if (Sse.IsSupported && (long)ctx->AStride * ctx->SlotCapacity > CachedBytes)
        {
            byte* a = ctx->A;
            long stride = ctx->AStride, last = ctx->Rank * sizeof(float) - 1;
            // The A array is 64-byte aligned, so an A of ≤ 64 bytes (rank ≤ 16) is one line: one prefetch.
            if (stride <= 64)
                for (int h = 0; h < hits; h++) Sse.Prefetch0(a + hitSlot[h] * stride);
            else
                for (int h = 0; h < hits; h++)
                {
                    byte* p = a + hitSlot[h] * stride;
                    Sse.Prefetch0(p);
                    Sse.Prefetch0(p + last);
                }
        }
        return hits;
    }

    /// <summary>The hit lists of a block from slots given ahead (<see cref="LoraContext.KnownSlots"/>): the packing
    /// <see cref="ProbeBlock"/> ends with, 16 at a time at AVX-512, without the filter or the probes.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int KnownHits(int* slots, int n, int* hitPos, int* hitSlot)
    {
        int hits = 0, k = 0;
        if (Avx512F.IsSupported)
        {
            var position = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            for (; k + 16 <= n; k += 16, position += Vector512.Create(16))
            {
                var s = Vector512.Load(slots + k);
                var keep = Vector512.GreaterThanOrEqual(s, Vector512<int>.Zero);
                Avx512F.Compress(Vector512<int>.Zero, keep, position).Store(hitPos + hits);
                Avx512F.Compress(Vector512<int>.Zero, keep, s).Store(hitSlot + hits);
                hits += BitOperations.PopCount(keep.ExtractMostSignificantBits());
            }
        }
        for (; k < n; k++)
        {
            int slot = slots[k];
            hitPos[hits] = k;
            hitSlot[hits] = slot;
            hits += ~slot >>> 31;
        }
        return hits;
    }

    /// <summary>The first line of each hit's A (64-byte aligned: the whole A at rank ≤ 16).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void PrefetchHitRows(byte* a, long stride, int* hitSlot, int hits)
    {
        for (int q = 0; q < hits; q++) Sse.Prefetch0(a + hitSlot[q] * stride);
    }

    /// <summary>Serves bags [b0, b1) of a resolved block (hits in position order, positions relative to
    /// <paramref name="from"/>): the W part of every bag stored by <see cref="WBag{TS, TV, TF, TN}"/>, then each adapted
    /// bag's hits summed in rank space (weighted, scaled for Mean), then one B product per adapted bag.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void ServeBlock<TS, TV, TF, TN>(in BagJob job, int b0, int b1, long from, long rangeEnd, int hits, int* hitPos, int* hitSlot,
                                           float* blockA, int* adaptedBags, int rankPad, long* nextIds, int* nextCandidates, int nextCandidateCount)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* offsets = (long*)job.Offsets;
        float* weights = job.Weights == null ? null : job.Weights + from;
        int dim = job.Dim, rank = ctx->Rank;
        byte* a = ctx->A;
        long stride = ctx->AStride;
        // The W loops of the whole block first, back to back as in the plain kernel, then the A sums: interleaved bag
        // by bag, each bag's hits broke the W stream, and with most lookups adapted (100 k rows, 70 % hits) the W
        // loop ran ~1.4x slower per row than the plain one (profiled).
        for (int b = b0; b < b1; b++)
        {
            long start = offsets[b], end = offsets[b + 1];
            WBag<TS, TV, TF, TN>(in job, start, end, rangeEnd, job.Mean && end > start ? 1f / (end - start) : 1f, job.Output + (long)b * dim);
            // The next block's buckets, a few bags before its probes (see BucketPrefetchLeadBags).
            if (b == Math.Max(b0, b1 - 1 - BucketPrefetchLeadBags) && nextIds != null) PrefetchBlockBuckets(ctx, nextIds, nextCandidates, nextCandidateCount);
            // A small A array is not prefetched at probe time (CachedBytes), yet with few hits a block its lines are cold
            // again by the A sums (a 100 k-row table's W stream passes through L2 between two touches), and each hit
            // waited on its A. Prefetched one bag's W loop before the sums they arrive in time (1.03x faster at 2 % hits
            // on 100 k rows; issued right before the sums they arrive too late).
            // Only with few hits: with most lookups adapted A stays hot and the prefetches cost more than they save
            // (0.98x at 70 %).
            if (b == Math.Max(b0, b1 - 2) && hits <= SparseHits && stride * ctx->SlotCapacity <= CachedBytes) PrefetchHitRows(a, stride, hitSlot, hits);
        }
        int h = 0, adapted = 0;
        for (int b = b0; b < b1 && h < hits; b++)
        {
            long start = offsets[b], end = offsets[b + 1];
            float scale = job.Mean && end > start ? 1f / (end - start) : 1f;
            int bagEnd = (int)(end - from);
            if (hitPos[h] >= bagEnd) continue;
            float* coefficients = blockA + adapted * rankPad;
            adaptedBags[adapted++] = b;
            // A is padded to a multiple of 8 floats in the A array (SlotLayout.ABytesFor): rank ≤ 8 reads 8 floats,
            // rank ≤ 16 reads 16; lanes ≥ rank are never used by the B product.
            if (rank <= 8)
            {
                var s = Vector256<float>.Zero;
                do
                {
                    float w = weights == null ? 1f : weights[hitPos[h]];
                    s = Vector256.FusedMultiplyAdd(Vector256.Load((float*)(a + hitSlot[h] * stride)), Vector256.Create(w), s);
                } while (++h < hits && hitPos[h] < bagEnd);
                (s * scale).Store(coefficients);
            }
            else if (rank <= 16 && Vector512.IsHardwareAccelerated)
            {
                // Two accumulators, alternate hits: with most lookups adapted (~22 hits a bag) one chain of dependent
                // FMAs set the pace (1.03x faster at 70 % hits).
                Vector512<float> s = Vector512<float>.Zero, s2 = Vector512<float>.Zero;
                for (; h + 1 < hits && hitPos[h + 1] < bagEnd; h += 2)
                {
                    s = Vector512.FusedMultiplyAdd(Vector512.Load((float*)(a + hitSlot[h] * stride)), Vector512.Create(weights == null ? 1f : weights[hitPos[h]]), s);
                    s2 = Vector512.FusedMultiplyAdd(Vector512.Load((float*)(a + hitSlot[h + 1] * stride)), Vector512.Create(weights == null ? 1f : weights[hitPos[h + 1]]), s2);
                }
                if (h < hits && hitPos[h] < bagEnd)
                {
                    s = Vector512.FusedMultiplyAdd(Vector512.Load((float*)(a + hitSlot[h] * stride)), Vector512.Create(weights == null ? 1f : weights[hitPos[h]]), s);
                    h++;
                }
                ((s + s2) * scale).Store(coefficients);
            }
            else if (rank <= 16)
            {
                Vector256<float> s0 = Vector256<float>.Zero, s1 = Vector256<float>.Zero;
                do
                {
                    float* p = (float*)(a + hitSlot[h] * stride);
                    var w = Vector256.Create(weights == null ? 1f : weights[hitPos[h]]);
                    s0 = Vector256.FusedMultiplyAdd(Vector256.Load(p), w, s0);
                    s1 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 8), w, s1);
                } while (++h < hits && hitPos[h] < bagEnd);
                (s0 * scale).Store(coefficients);
                (s1 * scale).Store(coefficients + 8);
            }
            else
            {
                new Span<float>(coefficients, rank).Clear();
                do
                {
                    float w = (weights == null ? 1f : weights[hitPos[h]]) * scale;
                    LoraMath.Axpy(w, (float*)(a + hitSlot[h] * stride), coefficients, rank);
                } while (++h < hits && hitPos[h] < bagEnd);
            }
        }
        if (adapted > 0) ApplyB<TS, TV, TN>(job.Output, dim, ctx->B, rank, adaptedBags, adapted, blockA, rankPad);
    }

    /// <summary>The W part of one bag, exactly as the plain kernel computes it (unweighted fp32/fp16: plain adds on
    /// the row pointer; int8: the row's scale broadcast, its bias summed), scaled and stored.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void WBag<TS, TV, TF, TN>(in BagJob job, long start, long end, long rangeEnd, float scale, float* output)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        long* indices = (long*)job.Indices;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = TN.N, distance = job.PrefetchDistance;
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        float biasSum = 0;
        if (weights == null && !TF.HasBias)
        {
            if (Sse.IsSupported && distance > 0)
            {
                for (long j = start; j < end; j++)
                {
                    PrefetchRow(indices, j + distance, rangeEnd, table, stride);
                    byte* row = table + indices[j] * stride;
                    a0 = TS.Add(TF.Load<TS, TV>(row, 0), a0);
                    if (nv > 1) a1 = TS.Add(TF.Load<TS, TV>(row, w), a1);
                    if (nv > 2) a2 = TS.Add(TF.Load<TS, TV>(row, 2 * w), a2);
                    if (nv > 3) a3 = TS.Add(TF.Load<TS, TV>(row, 3 * w), a3);
                }
            }
            else
            {
                for (long j = start; j < end; j++)
                {
                    byte* row = table + indices[j] * stride;
                    a0 = TS.Add(TF.Load<TS, TV>(row, 0), a0);
                    if (nv > 1) a1 = TS.Add(TF.Load<TS, TV>(row, w), a1);
                    if (nv > 2) a2 = TS.Add(TF.Load<TS, TV>(row, 2 * w), a2);
                    if (nv > 3) a3 = TS.Add(TF.Load<TS, TV>(row, 3 * w), a3);
                }
            }
        }
        else if (weights == null)
        {
            for (long j = start; j < end; j++)
            {
                if (Sse.IsSupported && distance > 0) PrefetchRow(indices, j + distance, rangeEnd, table, stride);
                byte* row = table + indices[j] * stride;
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
            for (long j = start; j < end; j++)
            {
                if (Sse.IsSupported && distance > 0) PrefetchRow(indices, j + distance, rangeEnd, table, stride);
                byte* row = table + indices[j] * stride;
                TF.RowFactors(row, dim, weights[j], out float rowScale, out float bias);
                TV s = TS.Broadcast(rowScale);
                a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), s, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), s, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), s, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), s, a3);
                if (TF.HasBias) biasSum += bias;
            }
        }
        if (TF.HasBias)
        {
            TV bv = TS.Broadcast(biasSum);
            a0 = TS.Add(a0, bv); a1 = TS.Add(a1, bv); a2 = TS.Add(a2, bv); a3 = TS.Add(a3, bv);
        }
        if (scale != 1f)
        {
            TV m = TS.Broadcast(scale);
            a0 = TS.Multiply(a0, m); a1 = TS.Multiply(a1, m); a2 = TS.Multiply(a2, m); a3 = TS.Multiply(a3, m);
        }
        TS.Store(a0, output);
        if (nv > 1) TS.Store(a1, output + w);
        if (nv > 2) TS.Store(a2, output + 2 * w);
        if (nv > 3) TS.Store(a3, output + 3 * w);
    }

    /// <summary>out_b += c_b · B for the adapted bags of a block (c_b = the bag's scaled rank-space sum, row i of
    /// <paramref name="blockA"/> for bag <paramref name="bags"/>[i]).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void ApplyB<TS, TV, TN>(float* output, int dim, float* b, int rank, int* bags, int count, float* blockA, int rankPad)
        where TS : ISimd<TV> where TV : struct where TN : IVectorCount
    {
        int w = TS.Count, nv = TN.N, i = 0;
        // Two bags at a time: each B vector loaded feeds both bags' FMAs. One bag at a time, every 4 FMAs waited on
        // 4 B loads and a broadcast (two at a time is about 1.03x faster).
        for (; i + 2 <= count; i += 2)
        {
            float* o = output + (long)bags[i] * dim, p = output + (long)bags[i + 1] * dim;
            float* c0 = blockA + i * rankPad, c1 = c0 + rankPad;
            TV a0 = TS.LoadFp32(o), a1 = nv > 1 ? TS.LoadFp32(o + w) : TS.Zero, a2 = nv > 2 ? TS.LoadFp32(o + 2 * w) : TS.Zero, a3 = nv > 3 ? TS.LoadFp32(o + 3 * w) : TS.Zero;
            TV d0 = TS.LoadFp32(p), d1 = nv > 1 ? TS.LoadFp32(p + w) : TS.Zero, d2 = nv > 2 ? TS.LoadFp32(p + 2 * w) : TS.Zero, d3 = nv > 3 ? TS.LoadFp32(p + 3 * w) : TS.Zero;
            float* bRow = b;
            for (int k = 0; k < rank; k++, bRow += dim)
            {
                TV x = TS.Broadcast(c0[k]), y = TS.Broadcast(c1[k]);
                TV v = TS.LoadFp32(bRow);
                a0 = TS.MultiplyAdd(v, x, a0); d0 = TS.MultiplyAdd(v, y, d0);
                if (nv > 1) { v = TS.LoadFp32(bRow + w); a1 = TS.MultiplyAdd(v, x, a1); d1 = TS.MultiplyAdd(v, y, d1); }
                if (nv > 2) { v = TS.LoadFp32(bRow + 2 * w); a2 = TS.MultiplyAdd(v, x, a2); d2 = TS.MultiplyAdd(v, y, d2); }
                if (nv > 3) { v = TS.LoadFp32(bRow + 3 * w); a3 = TS.MultiplyAdd(v, x, a3); d3 = TS.MultiplyAdd(v, y, d3); }
            }
            TS.Store(a0, o); TS.Store(d0, p);
            if (nv > 1) { TS.Store(a1, o + w); TS.Store(d1, p + w); }
            if (nv > 2) { TS.Store(a2, o + 2 * w); TS.Store(d2, p + 2 * w); }
            if (nv > 3) { TS.Store(a3, o + 3 * w); TS.Store(d3, p + 3 * w); }
        }
        if (i < count)
        {
            float* o = output + (long)bags[i] * dim;
            float* coefficients = blockA + i * rankPad;
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

    /// <summary>The positions k &lt; <paramref name="n"/> whose ids[k] may have a slot (the presence filter), in order,
    /// into <paramref name="candidates"/> (room for n + 7: the AVX-512 store may write up to 7 entries past the count);
    /// returns their count. No branch per index: at the AVX2 and AVX-512 levels 8 indices at a time (two hashes with
    /// vpmulld, the words with vpgatherdd, both bits tested with one compare); at the AVX-512 level the passing positions
    /// are packed with vpcompressd and stored 8 at a time, else collected from the compare's bit mask.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int FilterBlock<TS, TV>(LoraContext* ctx, long* ids, int n, int* candidates) where TS : ISimd<TV> where TV : struct
    {
        uint* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        int count = 0, k = 0;
        if (Avx2.IsSupported && typeof(TS) != typeof(Simd128))
        {
            // 8 indices a step: their low dwords packed into one vector (the hashes only use them), two 32-bit
            // multiplies (the word; the two bits), the words gathered, both bits tested at once.
            var wordMultiplier = Vector256.Create(AdapterGeneration.FilterMultiplier);
            var bitsMultiplier = Vector256.Create(AdapterGeneration.FilterBitsMultiplier);
            var low5 = Vector256.Create(31u);
            var one = Vector256.Create(1u);
            var position = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            var eight = Vector256.Create(8);
            // vpcompressd at the AVX-512 level only, so the kernels selected for AVX2 (and their tests) use the bit walk.
            bool compress = Avx512F.VL.IsSupported && typeof(TS) == typeof(Simd512);
            for (; k + 8 <= n; k += 8, position += eight)
            {
                var first = Vector256.Load((float*)(ids + k));
                var second = Vector256.Load((float*)(ids + k + 4));
                // shufps keeps dwords 0 and 2 of each row pair: rows k, k+1, k+4, k+5 | k+2, k+3, k+6, k+7; vpermq reorders.
                var packed = Avx2.Permute4x64(Avx.Shuffle(first, second, 0b10_00_10_00).AsUInt64(), 0b11_01_10_00).AsUInt32();
                var word = (packed * wordMultiplier) >> filterShift;
                var h = packed * bitsMultiplier;
                var bits = Avx2.ShiftLeftLogicalVariable(one, h >> 27) | Avx2.ShiftLeftLogicalVariable(one, (h >> 22) & low5);
                var words = Avx2.GatherVector256(filter, word.AsInt32(), 4);
                var pass = Vector256.Equals(words & bits, bits).AsInt32();
                uint m = pass.ExtractMostSignificantBits();
                if (compress)
                {
                    Avx512F.VL.Compress(Vector256<int>.Zero, pass, position).Store(candidates + count);
                    count += BitOperations.PopCount(m);
                }
                else
                    for (; m != 0; m &= m - 1) candidates[count++] = k + BitOperations.TrailingZeroCount(m);
            }
        }
        for (; k < n; k++)
        {
            candidates[count] = k;
            count += AdapterGeneration.MayContain(filter, filterShift, ids[k]) ? 1 : 0;
        }
        return count;
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
    /// until consistent. The fallback of <see cref="Run{TS, TV, TF, TN}"/> for a block that overlapped a write epoch;
    /// it waits only for a slot being written, bounded by one slot write.</summary>
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
        int mapShift = ctx->MapShift, aStride = ctx->AStride;
        byte* records = ctx->Records, aArray = ctx->A;
        uint* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        // Rank ≤ 16 (the common case): the bag's Σ A[i] lives in two 8-float registers and each A[i] is loaded
        // straight from the A array, which pads A to a multiple of 8 floats (SlotLayout.ABytesFor), so the loads stay
        // inside it; lanes ≥ rank are never used (only aAcc[0..rank) feeds the B product).
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
                int slot = Probe(r, filter, filterShift, map, mapShift);
                if (slot >= 0)
                {
                    byte* p = records + (long)slot * SlotLayout.RecordBytes;
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
                                float* slotA = (float*)(aArray + (long)slot * aStride);
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
