using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The LoRA bag kernel at one vector width and row format, on the embedding kernels' own SIMD abstractions
/// (<see cref="ISimd{TV}"/>, <see cref="IRowFormat"/>) and worker pool, for rows of 1–4 whole vectors (dim 16/32/48/64
/// at AVX-512, 8..32 at AVX2, 4..16 at SSE4): the bag's output stays in registers as in the plain kernel. The main
/// path (<see cref="Run"/>) keeps the plain kernel's lean W loop and does the adapter's work (filter, map probe, A
/// sums, B product) in separate passes over a block of bags, validated as a whole against the generation's write
/// epoch; <see cref="LoraPerRowBag"/> is the row-by-row form, under the per-slot seqlocks, that a block overlapping a
/// write falls back to. Other dims use <see cref="LoraEmbeddingBag"/>'s generic path.
/// This file is the dispatch and the block loop; <see cref="LoraSlotResolution"/> finds a block's hits,
/// <see cref="LoraBlockServing"/> serves the block.</summary>
internal static unsafe class LoraBagKernel
{
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

    /// <summary>Bags per block: the unit that is resolved, served and validated together.</summary>
    internal const int BagBlock = 64;

    /// <summary>Bags before the end of a block at which the next block's map buckets are prefetched: late enough that
    /// they are still in L1/L2 when probed (prefetched at the block's start, a whole block of W rows evicted them again),
    /// early enough to arrive (12 bags ≈ 400 W rows; about 2 % less LoRA/plain time at 4 M rows, 2 % hits).</summary>
    internal const int BucketPrefetchLeadBags = 12;

    /// <summary>A map or A array this small stays in L2 between blocks (a quarter of a 1 MiB L2), so it is not
    /// prefetched: with most lookups adapted that was ~1400 prefetch instructions a block for lines already near, and
    /// into L1 only for the block's W loops to evict them again before the A sums (about 5–8 % of the LoRA time at
    /// 100 k rows, 70 % adapted).</summary>
    internal const long CachedBytes = 256 << 10;

    /// <summary>Hits in a block (of up to <see cref="BlockIndices"/> lookups) up to which a small A array is prefetched
    /// late in the block (see <see cref="LoraBlockServing"/>): 1 in 8 lookups.</summary>
    internal const int SparseHits = BlockIndices / 8;

    /// <summary>Most indices a block resolves at once (the hit lists live on the stack); a single bag longer than
    /// this takes the per-row path.</summary>
    internal const int BlockIndices = 2048;

    /// <summary>Bags [bagBegin, bagEnd) in blocks of up to <see cref="BagBlock"/> bags. Per block:
    /// <list type="number">
    /// <item>read the generation's write epoch (acquire); odd → the trainer is writing: the block goes row by row;</item>
    /// <item><see cref="LoraSlotResolution.FilterBlock{TS, TV}"/> (done before the previous block's W rows): the presence filter over all
    /// the block's indices (branchless, 8 at a time), the candidates' map buckets prefetched near the end of the previous
    /// block; <see cref="LoraSlotResolution.ProbeBlock"/>: the map probe of each candidate → the block's list of (position, slot);</item>
    /// <item><see cref="LoraBlockServing.ServeBlock{TS, TV, TF, TN}"/>: the W rows of every bag of the block by the plain kernel's lean
    /// loop, back to back; then per adapted bag the A rows of its hits summed in rank space; then
    /// out_b += (s_b·Σ w A)·B for the adapted bags;</item>
    /// <item>read the epoch again after a read barrier: unchanged → nothing the block read (map, A, W of adapted rows)
    /// was written meanwhile, so every adapted row was read whole and consistent with its W; changed → the block is
    /// redone by <see cref="LoraPerRowBag.Bag{TS, TV, TF, TN}"/>, the per-row path under the per-slot seqlocks (outputs are overwritten).</item>
    /// </list>
    /// So a hit costs a probe, one A load and an FMA: no per-slot counter, no owner check (a slot can only be freed
    /// and reused inside an epoch write). The trainer opens the epoch only while it publishes a step's A rows or
    /// merges (microseconds per step), so blocks rarely redo.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    internal static bool Run<TS, TV, TF, TN>(in BagJob job, int bagBegin, int bagEnd)
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
        bool perRow = ctx->PerRowOnly, candidatesReady = false;
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
                if (known != null) hits = LoraSlotResolution.KnownHits(known + from, (int)n, hitPos, hitSlot);
                else
                {
                    if (!candidatesReady)
                    {
                        candidateCount = LoraSlotResolution.FilterBlock<TS, TV>(ctx, indices + from, (int)n, candidates);
                        LoraSlotResolution.PrefetchBlockBuckets(ctx, indices + from, candidates, candidateCount);
                    }
                    hits = LoraSlotResolution.ProbeBlock(ctx, indices + from, candidates, candidateCount, hitPos, hitSlot, compress);
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
                        nextCandidateCount = LoraSlotResolution.FilterBlock<TS, TV>(ctx, nextIds, nextN, nextCandidates);
                        candidatesReady = true;
                    }
                }
                if (!LoraBlockServing.ServeBlock<TS, TV, TF, TN>(in job, b, e, from, rangeEnd, hits, hitPos, hitSlot, blockA, adaptedBags, rankPad, nextIds, nextCandidates, nextCandidateCount)) return false;
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
                for (int k = b; k < e; k++)
                    if (!LoraPerRowBag.Bag<TS, TV, TF, TN>(in job, k, rangeEnd)) return false;
            }
        }
        if (ctx->BlockCounts != null)
        {
            Interlocked.Add(ref ctx->BlockCounts[0], fast);
            Interlocked.Add(ref ctx->BlockCounts[1], redone);
        }
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
}
