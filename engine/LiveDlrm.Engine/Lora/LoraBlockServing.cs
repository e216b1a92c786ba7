using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>Serving a resolved block of the LoRA block kernel: the W rows of every bag by the plain kernel's own loop
/// (<see cref="BagKernel.SumRows{TS, TV, TF, TI, TN, TC}"/>), then each adapted bag's hits summed in rank space, then one
/// rank × dim B product per adapted bag.</summary>
internal static unsafe class LoraBlockServing
{
    /// <summary>Serves bags [b0, b1) of a resolved block (hits in position order, positions relative to
    /// <paramref name="from"/>): the W part of every bag stored by the plain kernel's loop, then each adapted
    /// bag's hits summed in rank space (weighted, scaled for Mean), then one B product per adapted bag. False when an
    /// index is out of range (the batch was changed during the lookup).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static bool ServeBlock<TS, TV, TF, TN>(in BagJob job, int b0, int b1, long from, long rangeEnd, int hits, int* hitPos, int* hitSlot,
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
        // by bag, each bag's hits broke the W stream and with most lookups adapted the W loop ran ~1.4x slower per row.
        if (ctx->NativeRows)
        {
            // The same W sums and the same two prefetch points, with the block's bags in three native calls.
            int bucketsAfter = Math.Max(b0, b1 - 1 - LoraBagKernel.BucketPrefetchLeadBags), hitsAfter = Math.Max(b0, b1 - 2);
            if (!NativeBagKernel.Run<TS, TV, TF, long>(in job, b0, bucketsAfter + 1)) return false;
            if (nextIds != null) LoraSlotResolution.PrefetchBlockBuckets(ctx, nextIds, nextCandidates, nextCandidateCount);
            if (!NativeBagKernel.Run<TS, TV, TF, long>(in job, bucketsAfter + 1, hitsAfter + 1)) return false;
            if (hits <= LoraBagKernel.SparseHits && stride * ctx->SlotCapacity <= LoraBagKernel.CachedBytes) LoraSlotResolution.PrefetchHitRows(a, stride, hitSlot, hits);
            if (!NativeBagKernel.Run<TS, TV, TF, long>(in job, hitsAfter + 1, b1)) return false;
        }
        else
            for (int b = b0; b < b1; b++)
            {
                long start = offsets[b], end = offsets[b + 1];
                if (!BagKernel.SumRows<TS, TV, TF, long, TN, CheckedIndices>(in job, start, end, rangeEnd, 0, true, job.Mean && end > start ? 1f / (end - start) : 1f, job.Output + (long)b * dim))
                    return false;
                // The next block's buckets, a few bags before its probes (see BucketPrefetchLeadBags).
                if (b == Math.Max(b0, b1 - 1 - LoraBagKernel.BucketPrefetchLeadBags) && nextIds != null) LoraSlotResolution.PrefetchBlockBuckets(ctx, nextIds, nextCandidates, nextCandidateCount);
                // A small A array is not prefetched at probe time (LoraBagKernel.CachedBytes), yet with few hits a block its lines are cold
                // again by the A sums (a 100 k-row table's W stream passes through L2 between two touches), and each hit
                // waited on its A. Prefetched one bag's W loop before the sums they arrive in time (about 3 % faster at 2 % hits,
                // 100 k rows; right before the sums or three bags before they gained nothing).
                // Only with few hits: with most lookups adapted A stays hot and the prefetches cost more than they save.
                if (b == Math.Max(b0, b1 - 2) && hits <= LoraBagKernel.SparseHits && stride * ctx->SlotCapacity <= LoraBagKernel.CachedBytes) LoraSlotResolution.PrefetchHitRows(a, stride, hitSlot, hits);
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
                // FMAs set the pace (about 3 % faster at 70 % hits, 100 k rows).
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
        return true;
    }

    /// <summary>out_b += c_b · B for the adapted bags of a block (c_b = the bag's scaled rank-space sum, row i of
    /// <paramref name="blockA"/> for bag <paramref name="bags"/>[i]).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void ApplyB<TS, TV, TN>(float* output, int dim, float* b, int rank, int* bags, int count, float* blockA, int rankPad)
        where TS : ISimd<TV> where TV : struct where TN : IVectorCount
    {
        int w = TS.Count, nv = TN.N, i = 0;
        // Two bags at a time: each B vector loaded feeds both bags' FMAs. One bag at a time, every 4 FMAs waited on
        // 4 B loads and a broadcast (about 3 % faster, 100 k rows).
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
}
