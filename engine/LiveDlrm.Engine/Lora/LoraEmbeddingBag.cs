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
    /// <summary>Indices ahead to prefetch (FBGEMM's default distance).</summary>
    const int PrefetchDistance = 16;

    public static void Forward(TableAdapter adapter, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, int threads = 1)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        var table = adapter.Table;
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        var g = adapter.Pin();
        try { Run(table, g, Volatile.Read(ref g.B), indices, offsets, output, pooling, weights, bags, threads); }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>The same kernel without the adapter (no probe, no rank product): the baseline that isolates the
    /// adapter's overhead in the comparative benchmark.</summary>
    public static void ForwardPlain(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                                    PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, int threads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        int bags = EmbeddingBagValidation.Validate(table, indices, offsets, output.Length, pooling, weights);
        Run(table, null, Array.Empty<float>(), indices, offsets, output, pooling, weights, bags, threads);
    }

    struct Job
    {
        public EmbeddingTable Table;
        public AdapterGeneration? Gen;
        public nint Indices, Offsets, Weights, Output, B, Data;
        public int Dim, Rank, Stride, IndexCount;
        public EmbeddingStorage Storage;
        public PoolingMode Pooling;
    }

    static void Run(EmbeddingTable table, AdapterGeneration? g, float[] b, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets,
                    Span<float> output, PoolingMode pooling, ReadOnlySpan<float> weights, int bags, int threads)
    {
        fixed (long* pi = indices)
        fixed (long* po = offsets)
        fixed (float* pw = weights)
        fixed (float* pout = output)
        fixed (float* pb = b)
        {
            var job = new Job
            {
                Table = table, Gen = g, Indices = (nint)pi, Offsets = (nint)po, Weights = (nint)pw, Output = (nint)pout, B = (nint)pb,
                Data = (nint)table.DataPointer, Dim = table.Dim, Rank = g?.Rank ?? 0, Stride = table.RowStride,
                IndexCount = indices.Length, Storage = table.Storage, Pooling = pooling,
            };
            threads = Math.Min(threads, Math.Max(1, bags / 16));
            if (threads == 1) { RunBags(job, 0, bags); return; }
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads },
                         t => RunBags(job, (int)((long)bags * t / threads), (int)((long)bags * (t + 1) / threads)));
        }
    }

    static void RunBags(in Job job, int firstBag, int endBag)
    {
        int dim = job.Dim, rank = job.Rank, stride = job.Stride, n = job.IndexCount;
        long* idx = (long*)job.Indices, off = (long*)job.Offsets;
        float* weights = (float*)job.Weights, output = (float*)job.Output, b = (float*)job.B;
        byte* data = (byte*)job.Data;
        var g = job.Gen;
        var storage = job.Storage;
        bool weighted = job.Pooling == PoolingMode.WeightedSum;
        int lines = (stride + 63) >> 6;
        float* acc = stackalloc float[dim];
        float* w = stackalloc float[dim];
        float* aAcc = stackalloc float[Math.Max(rank, 1)];
        float* a = stackalloc float[Math.Max(rank, 1)];

        for (int bag = firstBag; bag < endBag; bag++)
        {
            int start = (int)off[bag], end = (int)off[bag + 1];
            new Span<float>(acc, dim).Clear();
            bool adapted = false;
            for (int j = start; j < end; j++)
            {
                if (j + PrefetchDistance < n && Sse.IsSupported)
                {
                    long ahead = idx[j + PrefetchDistance];
                    byte* line = data + ahead * stride;
                    for (int l = 0; l < lines; l++) Sse.Prefetch0(line + (l << 6));
                    if (g is not null) Sse.Prefetch0(g.MapPointer + g.Bucket(ahead));
                }
                long row = idx[j];
                float weight = weighted ? weights[j] : 1f;
                int slot = g is null ? -1 : g.Find(row);
                if (slot >= 0 && TableAdapter.ReadSlot(g!, slot, row, job.Table, a, w))
                {
                    if (!adapted) { new Span<float>(aAcc, rank).Clear(); adapted = true; }
                    LoraMath.Axpy(weight, w, acc, dim);
                    LoraMath.Axpy(weight, a, aAcc, rank);
                }
                else AddRow(storage, data + row * stride, weight, acc, dim);
            }
            float* o = output + (long)bag * dim;
            if (adapted)
                for (int k = 0; k < rank; k++) LoraMath.Axpy(aAcc[k], b + k * dim, acc, dim);
            float scale = job.Pooling == PoolingMode.Mean && end > start ? 1f / (end - start) : 1f;
            if (scale == 1f) Buffer.MemoryCopy(acc, o, dim * sizeof(float), dim * sizeof(float));
            else for (int c = 0; c < dim; c++) o[c] = acc[c] * scale;
        }
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
