using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>Slot resolution of the LoRA block kernel: which lookups of a block have an adapter slot, as a list of
/// (position, slot) hits. The presence filter over all of a block's indices, then the map probe of the candidates, or
/// the slots given ahead by a benchmark (<see cref="LoraContext.KnownSlots"/>).</summary>
internal static unsafe class LoraSlotResolution
{
    /// <summary>The positions k &lt; <paramref name="n"/> whose ids[k] may have a slot (the presence filter), in order,
    /// into <paramref name="candidates"/> (room for n + 7: the AVX-512 store may write up to 7 entries past the count);
    /// returns their count. No branch per index: at the AVX2 and AVX-512 levels 8 indices at a time (two hashes with
    /// vpmulld, the words with vpgatherdd, both bits tested with one compare); at the AVX-512 level the passing positions
    /// are packed with vpcompressd and stored 8 at a time, else collected from the compare's bit mask.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static int FilterBlock<TS, TV>(LoraContext* ctx, long* ids, int n, int* candidates) where TS : ISimd<TV> where TV : struct
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

    /// <summary>The hits among the candidates: <paramref name="hitPos"/>[h] = position, <paramref name="hitSlot"/>[h] =
    /// its slot, in position order (both with room for count + 8); the A rows of the hits prefetched for
    /// <see cref="LoraBlockServing.ServeBlock{TS, TV, TF, TN}"/> unless the A array is small enough to stay cached
    /// (<see cref="LoraBagKernel.CachedBytes"/>). Two passes: every candidate's probe result stored at the candidate's own index, then
    /// the hits packed in place (8 at a time with vpcompressd when <paramref name="compress"/>). Packing inside the probe
    /// loop made each probe's stores wait on the previous probe's outcome (the hit count), and the next probe's loads
    /// on those stores.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static int ProbeBlock(LoraContext* ctx, long* ids, int* candidates, int count, int* hitPos, int* hitSlot, bool compress)
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
        if (Sse.IsSupported && (long)ctx->AStride * ctx->SlotCapacity > LoraBagKernel.CachedBytes)
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
    internal static int KnownHits(int* slots, int n, int* hitPos, int* hitSlot)
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

    /// <summary>The map buckets of the candidates.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void PrefetchBlockBuckets(LoraContext* ctx, long* ids, int* candidates, int count)
    {
        if (!Sse.IsSupported || (ctx->MapMask + 1) * sizeof(long) <= LoraBagKernel.CachedBytes) return;
        long* map = ctx->Map;
        int mapShift = ctx->MapShift;
        for (int i = 0; i < count; i++) Sse.Prefetch0(map + AdapterGeneration.Home(ids[candidates[i]], mapShift));
    }

    /// <summary>The first line of each hit's A (64-byte aligned: the whole A at rank ≤ 16).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void PrefetchHitRows(byte* a, long stride, int* hitSlot, int hits)
    {
        for (int q = 0; q < hits; q++) Sse.Prefetch0(a + hitSlot[q] * stride);
    }
}
