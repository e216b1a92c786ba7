using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The per-row path of the LoRA register kernel: one bag, row by row, each adapted row's W and A read as one
/// snapshot under its slot's seqlock (<see cref="SlotSeqlock.TryRead{TSnapshot}"/>). What
/// <see cref="LoraBagKernel"/> falls back to for a block that overlapped a write epoch; it waits only for a slot being
/// written, bounded by one slot write.</summary>
internal static unsafe class LoraPerRowBag
{
    /// <summary>Bag <paramref name="b"/> of <paramref name="job"/> (1–4 vectors per row, see
    /// <see cref="IVectorCount"/>). False when an index is out of range.</summary>
    /// <para>When the adapter serves hot rows from W (<see cref="LoraContext.ValidateW"/>) the trainer also writes W
    /// rows that have no slot, inside the write epoch only, so the whole bag is read between two equal, even values
    /// of the epoch (waiting while it is odd, bounded by one publish), as <see cref="TableAdapter.ReadEffectiveRow"/> does.</para>
    public static bool Bag<TS, TV, TF, TN>(in BagJob job, int b, long rangeEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        if (!ctx->ValidateW) return BagOnce<TS, TV, TF, TN>(in job, b, rangeEnd);
        var spin = new System.Threading.SpinWait();
        while (true)
        {
            int epoch = Volatile.Read(ref *ctx->WriteEpoch);
            if ((epoch & 1) == 0)
            {
                if (!BagOnce<TS, TV, TF, TN>(in job, b, rangeEnd)) return false;
                Volatile.ReadBarrier();
                if (Volatile.Read(ref *ctx->WriteEpoch) == epoch) return true;
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static bool BagOnce<TS, TV, TF, TN>(in BagJob job, int b, long rangeEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        LoraContext* ctx = (LoraContext*)job.Context;
        long* indices = (long*)job.Indices;
        long* offsets = (long*)job.Offsets;
        byte* table = job.Table;
        long stride = job.Stride;
        ulong rows = (ulong)job.Rows;
        float* weights = job.Weights;
        int dim = job.Dim, w = TS.Count, nv = TN.N, distance = job.PrefetchDistance, rank = ctx->Rank;
        // Locals, not ctx-> loads: the JIT cannot prove the stores to aAcc leave *ctx alone, so it would reload per index.
        long* map = ctx->Map;
        int mapShift = ctx->MapShift, aStride = ctx->AStride;
        SlotRecord* records = ctx->Records;
        byte* aArray = ctx->A;
        uint* filter = ctx->Filter;
        int filterShift = ctx->FilterShift;
        bool vecA = ASnapshot.FitsRegisters(rank);
        float* aAcc = stackalloc float[Math.Max(rank, 16)];
        float* aRow = stackalloc float[rank];
        var snapshot = new WAndA<TS, TV, TF, TN> { Dim = dim, A = new ASnapshot { Rank = rank, InRegisters = vecA, Copy = aRow } };
        long start = offsets[b], end = offsets[b + 1];
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        Vector256<float> sumA0 = Vector256<float>.Zero, sumA1 = Vector256<float>.Zero;
        float biasSum = 0;
        bool adapted = false;
        for (long j = start; j < end; j++)
        {
            long r = indices[j];
            if ((ulong)r >= rows) return false;
            if (distance > 0) RowPrefetch.Ahead(indices, j, distance, rangeEnd, table, stride);
            byte* row = table + r * stride;
            float weight = weights == null ? 1f : weights[j];
            int slot = AdapterGeneration.MayContain(filter, filterShift, r) ? AdapterGeneration.ProbeMap(r, map, mapShift) : -1;
            if (slot >= 0)
            {
                snapshot.Row = row;
                snapshot.A.Source = (float*)(aArray + (long)slot * aStride);
                if (SlotSeqlock.TryRead(records + slot, r, ref snapshot))
                {
                    TV vw = TS.Broadcast(weight);
                    a0 = TS.MultiplyAdd(snapshot.T0, vw, a0);
                    if (nv > 1) a1 = TS.MultiplyAdd(snapshot.T1, vw, a1);
                    if (nv > 2) a2 = TS.MultiplyAdd(snapshot.T2, vw, a2);
                    if (nv > 3) a3 = TS.MultiplyAdd(snapshot.T3, vw, a3);
                    if (vecA)
                    {
                        var w8 = Vector256.Create(weight);
                        sumA0 = Vector256.FusedMultiplyAdd(snapshot.A.Low, w8, sumA0);
                        if (rank > 8) sumA1 = Vector256.FusedMultiplyAdd(snapshot.A.High, w8, sumA1);
                    }
                    else
                    {
                        if (!adapted) new Span<float>(aAcc, rank).Clear();
                        for (int k = 0; k < rank; k++) aAcc[k] = MathF.FusedMultiplyAdd(snapshot.A.Copy[k], weight, aAcc[k]);
                    }
                    adapted = true;
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
        return true;
    }

    /// <summary>An adapted row's W (dequantised, unweighted) in registers and its A, as one seqlock snapshot.</summary>
    struct WAndA<TS, TV, TF, TN> : ISlotSnapshot
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TN : IVectorCount
    {
        public ASnapshot A;
        public byte* Row;
        public int Dim;
        public TV T0, T1, T2, T3;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Take()
        {
            int w = TS.Count, nv = TN.N;
            TF.RowFactors(Row, Dim, 1f, out float scale, out float bias);
            TV vs = TS.Broadcast(scale), vb = TS.Broadcast(bias);
            T0 = TS.MultiplyAdd(TF.Load<TS, TV>(Row, 0), vs, vb);
            if (nv > 1) T1 = TS.MultiplyAdd(TF.Load<TS, TV>(Row, w), vs, vb);
            if (nv > 2) T2 = TS.MultiplyAdd(TF.Load<TS, TV>(Row, 2 * w), vs, vb);
            if (nv > 3) T3 = TS.MultiplyAdd(TF.Load<TS, TV>(Row, 3 * w), vs, vb);
            A.Take();
        }
    }
}
