using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LiveDlrm.Embeddings;

/// <summary>One validated lookup, as raw pointers so it can be handed to pool workers without allocation.
/// The memory behind the pointers is pinned (or native) for as long as the calling thread is inside
/// EmbeddingBag.Forward, which does not return before every worker is done.</summary>
internal unsafe struct BagJob
{
    public byte* Table;
    public long Rows;
    public int Stride;
    public int Dim;
    public void* Indices;
    public void* Offsets;
    public float* Output;
    /// <summary>Null unless pooling is weighted-sum.</summary>
    public float* Weights;
    public bool Mean;
    public int Bags;
    public int PrefetchDistance;
    /// <summary>Runs bags [begin, end); false when an index is out of range (validation makes that unreachable
    /// unless the caller mutated the batch concurrently).</summary>
    public delegate*<in BagJob, int, int, bool> Kernel;
    /// <summary>Kernel-specific extra state, null for plain lookups (the LoRA kernel's pinned adapter view, see
    /// Lora/LoraBagKernel.cs). Lives on the calling thread's stack, valid for the whole call like the spans above.</summary>
    public void* Context;
}

/// <summary>The arithmetic of one vector width; the loops live once in <see cref="BagKernel"/>.</summary>
internal unsafe interface ISimd<TV> where TV : struct
{
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    static abstract TV Broadcast(float value);
    static abstract TV Add(TV a, TV b);
    static abstract TV Multiply(TV a, TV b);
    /// <summary>a·b + c (fused where the level has FMA).</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);
    static abstract TV LoadFp32(float* p);
    /// <summary>Count IEEE halves at p widened to fp32.</summary>
    static abstract TV LoadFp16(ushort* p);
    /// <summary>Count bytes at p zero-extended to fp32.</summary>
    static abstract TV LoadU8(byte* p);
    static abstract void Store(TV value, float* p);
}

/// <summary>How a stored row turns into fp32: value = Load(row, col)·scale + bias, with scale and bias per row
/// (1 and 0 except for int8 rowwise). The per-sample weight is folded into both once per row.</summary>
internal unsafe interface IRowFormat
{
    static abstract bool HasBias { get; }
    /// <summary>Bytes of one stored element (fp32 4, fp16 2, int8 1).</summary>
    static abstract int ElementBytes { get; }
    static abstract TV Load<TS, TV>(byte* row, int col) where TS : ISimd<TV> where TV : struct;
    static abstract float LoadScalar(byte* row, int col);
    static abstract void RowFactors(byte* row, int dim, float weight, out float scale, out float bias);
}

internal unsafe struct Fp32Rows : IRowFormat
{
    public static bool HasBias => false;
    public static int ElementBytes => 4;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int col) where TS : ISimd<TV> where TV : struct => TS.LoadFp32((float*)row + col);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadScalar(byte* row, int col) => ((float*)row)[col];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void RowFactors(byte* row, int dim, float weight, out float scale, out float bias) { scale = weight; bias = 0; }
}

internal unsafe struct Fp16Rows : IRowFormat
{
    public static bool HasBias => false;
    public static int ElementBytes => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int col) where TS : ISimd<TV> where TV : struct => TS.LoadFp16((ushort*)row + col);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadScalar(byte* row, int col) => (float)((Half*)row)[col];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void RowFactors(byte* row, int dim, float weight, out float scale, out float bias) { scale = weight; bias = 0; }
}

internal unsafe struct Int8RowwiseRows : IRowFormat
{
    public static bool HasBias => true;
    public static int ElementBytes => 1;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int col) where TS : ISimd<TV> where TV : struct => TS.LoadU8(row + col);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadScalar(byte* row, int col) => row[col];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void RowFactors(byte* row, int dim, float weight, out float scale, out float bias)
    {
        scale = weight * Unsafe.ReadUnaligned<float>(row + dim);
        bias = weight * Unsafe.ReadUnaligned<float>(row + dim + 4);
    }
}

/// <summary>Vectors per row group as a type, so the JIT folds the 1–4 register branches out of the per-index loop.</summary>
internal interface IVectorCount { static abstract int N { get; } }
internal struct One : IVectorCount { public static int N => 1; }
internal struct Two : IVectorCount { public static int N => 2; }
internal struct Three : IVectorCount { public static int N => 3; }
internal struct Four : IVectorCount { public static int N => 4; }

/// <summary>Whether a W loop checks each index against the table (a type, so the JIT drops the unused test).</summary>
internal interface IIndexCheck { static abstract bool Enabled { get; } }
/// <summary>The plain lookup: an index changed after validation (the caller mutating the batch) stops the lookup.</summary>
internal struct CheckedIndices : IIndexCheck { public static bool Enabled => true; }
/// <summary>The LoRA block kernel: its blocks already read every index for the filter and the probes; the W loop
/// stays as lean as the plain one's would be without the test (about 14 % of the W loop's time per row at 100 k rows).</summary>
internal struct UncheckedIndices : IIndexCheck { public static bool Enabled => false; }

internal static unsafe class BagKernel
{
    /// <summary>Column group kept in registers across a bag: 4 vectors (64 floats at Vector512, so a dim-64 row is
    /// one pass). Wider rows take further passes over the same bag, whose rows are then in L1.</summary>
    const int GroupVectors = 4;

    /// <summary>Bags [bagBegin, bagEnd) of <paramref name="job"/> at one width, row format and index type. Compiled
    /// optimised at once like <see cref="SumRows"/>: its per-bag work in unoptimised code (every generic static call
    /// a call) would slow a table's first lookups several-fold.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool Run<TS, TV, TF, TI>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TI : unmanaged, IBinaryInteger<TI>
    {
        TI* offsets = (TI*)job.Offsets;
        int dim = job.Dim, w = TS.Count;
        long rangeEnd = long.CreateTruncating(offsets[bagEnd]);
        float* tail = stackalloc float[16];
        for (int b = bagBegin; b < bagEnd; b++)
        {
            long start = long.CreateTruncating(offsets[b]), end = long.CreateTruncating(offsets[b + 1]);
            float* output = job.Output + (long)b * dim;
            float inv = job.Mean && end > start ? 1f / (end - start) : 1f;
            int col = 0;
            bool prefetch = job.PrefetchDistance > 0;   // only on the first pass over the bag; later passes hit cache
            for (; col + GroupVectors * w <= dim; col += GroupVectors * w, prefetch = false)
                if (!SumRows<TS, TV, TF, TI, Four, CheckedIndices>(in job, start, end, rangeEnd, col, prefetch, inv, output + col)) return false;
            for (; col + w <= dim; col += w, prefetch = false)
                if (!SumRows<TS, TV, TF, TI, One, CheckedIndices>(in job, start, end, rangeEnd, col, prefetch, inv, output + col)) return false;
            if (col < dim && !Tail<TF, TI>(in job, start, end, rangeEnd, col, prefetch, inv, output, tail)) return false;
        }
        return true;
    }

    /// <summary>The W loop of every kernel (the plain lookup and the LoRA block kernel): columns
    /// [col, col + N·Count) of lookups [start, end) summed in N registers (weighted, int8 scale and bias folded),
    /// multiplied by <paramref name="scale"/> (1/len for Mean, else 1) and stored at <paramref name="output"/>.
    /// False when an index is out of range (checked only with <see cref="CheckedIndices"/>).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static bool SumRows<TS, TV, TF, TI, TN, TC>(in BagJob job, long start, long end, long rangeEnd, int col, bool prefetch, float scale, float* output)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TI : unmanaged, IBinaryInteger<TI> where TN : IVectorCount where TC : IIndexCheck
    {
        TI* indices = (TI*)job.Indices;
        ulong rows = (ulong)job.Rows;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, distance = job.PrefetchDistance;
        int w = TS.Count, nv = TN.N;
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        float biasSum = 0;
        bool ahead = Sse.IsSupported && prefetch && distance > 0;
        bool middleLine = RowPrefetch.MayTouchThreeLines(stride);
        // The column offset folded into the base pointer and the prefetch decision hoisted out of the loops.
        byte* columns = table + (long)col * TF.ElementBytes;
        if (weights == null && !TF.HasBias)
        {
            // Unweighted fp32/fp16 rows (the serving case): plain adds (bit-identical to an FMA by 1). About 8
            // instructions a row instead of 20, so the out-of-order window holds twice the rows in flight: from DRAM
            // this loop is bound by memory-level parallelism, not arithmetic (see docs/kernels.md).
            if (ahead)
            {
                for (long j = start; j < end; j++)
                {
                    long r = long.CreateTruncating(indices[j]);
                    if (TC.Enabled && (ulong)r >= rows) return false;
                    RowPrefetch.Ahead(indices, j, distance, rangeEnd, table, stride, middleLine);
                    byte* row = columns + r * stride;
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
                    long r = long.CreateTruncating(indices[j]);
                    if (TC.Enabled && (ulong)r >= rows) return false;
                    byte* row = columns + r * stride;
                    a0 = TS.Add(TF.Load<TS, TV>(row, 0), a0);
                    if (nv > 1) a1 = TS.Add(TF.Load<TS, TV>(row, w), a1);
                    if (nv > 2) a2 = TS.Add(TF.Load<TS, TV>(row, 2 * w), a2);
                    if (nv > 3) a3 = TS.Add(TF.Load<TS, TV>(row, 3 * w), a3);
                }
            }
        }
        else if (weights == null)
        {
            // Unweighted int8 rowwise: the row's scale broadcast straight from the row and its bias summed, with no
            // weight folded in (no multiplies by 1, no per-row weights test), and the prefetch decision hoisted as in
            // the fp32/fp16 loops.
            long factors = (long)(dim - col) * TF.ElementBytes;   // from a row's column `col` to its scale
            if (ahead)
            {
                for (long j = start; j < end; j++)
                {
                    long r = long.CreateTruncating(indices[j]);
                    if (TC.Enabled && (ulong)r >= rows) return false;
                    RowPrefetch.Ahead(indices, j, distance, rangeEnd, table, stride, middleLine);
                    byte* row = columns + r * stride;
                    TV s = TS.Broadcast(Unsafe.ReadUnaligned<float>(row + factors));
                    biasSum += Unsafe.ReadUnaligned<float>(row + factors + 4);
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
                    long r = long.CreateTruncating(indices[j]);
                    if (TC.Enabled && (ulong)r >= rows) return false;
                    byte* row = columns + r * stride;
                    TV s = TS.Broadcast(Unsafe.ReadUnaligned<float>(row + factors));
                    biasSum += Unsafe.ReadUnaligned<float>(row + factors + 4);
                    a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 0), s, a0);
                    if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, w), s, a1);
                    if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 2 * w), s, a2);
                    if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, 3 * w), s, a3);
                }
            }
        }
        else
        {
            for (long j = start; j < end; j++)
            {
                long r = long.CreateTruncating(indices[j]);
                if (TC.Enabled && (ulong)r >= rows) return false;
                if (ahead) RowPrefetch.Ahead(indices, j, distance, rangeEnd, table, stride, middleLine);
                byte* row = table + r * stride;
                TF.RowFactors(row, dim, weights[j], out float rowScale, out float bias);
                TV s = TS.Broadcast(rowScale);
                a0 = TS.MultiplyAdd(TF.Load<TS, TV>(row, col), s, a0);
                if (nv > 1) a1 = TS.MultiplyAdd(TF.Load<TS, TV>(row, col + w), s, a1);
                if (nv > 2) a2 = TS.MultiplyAdd(TF.Load<TS, TV>(row, col + 2 * w), s, a2);
                if (nv > 3) a3 = TS.MultiplyAdd(TF.Load<TS, TV>(row, col + 3 * w), s, a3);
                if (TF.HasBias) biasSum += bias;
            }
        }
        if (TF.HasBias)
        {
            TV bv = TS.Broadcast(biasSum);
            a0 = TS.Add(a0, bv);
            if (nv > 1) a1 = TS.Add(a1, bv);
            if (nv > 2) a2 = TS.Add(a2, bv);
            if (nv > 3) a3 = TS.Add(a3, bv);
        }
        if (scale != 1f)
        {
            TV m = TS.Broadcast(scale);
            a0 = TS.Multiply(a0, m);
            if (nv > 1) a1 = TS.Multiply(a1, m);
            if (nv > 2) a2 = TS.Multiply(a2, m);
            if (nv > 3) a3 = TS.Multiply(a3, m);
        }
        TS.Store(a0, output);
        if (nv > 1) TS.Store(a1, output + w);
        if (nv > 2) TS.Store(a2, output + 2 * w);
        if (nv > 3) TS.Store(a3, output + 3 * w);
        return true;
    }

    /// <summary>The last dim mod Count columns, one float at a time, so no load ever reaches past a row's end
    /// (the last row of a table ends the native buffer).</summary>
    static bool Tail<TF, TI>(in BagJob job, long start, long end, long rangeEnd, int col, bool prefetch, float inv, float* output, float* acc)
        where TF : IRowFormat where TI : unmanaged, IBinaryInteger<TI>
    {
        TI* indices = (TI*)job.Indices;
        ulong rows = (ulong)job.Rows;
        byte* table = job.Table;
        long stride = job.Stride;
        float* weights = job.Weights;
        int dim = job.Dim, distance = job.PrefetchDistance;
        int n = dim - col;
        for (int c = 0; c < n; c++) acc[c] = 0;
        float biasSum = 0;
        for (long j = start; j < end; j++)
        {
            long r = long.CreateTruncating(indices[j]);
            if ((ulong)r >= rows) return false;
            if (Sse.IsSupported && prefetch && distance > 0) RowPrefetch.Ahead(indices, j, distance, rangeEnd, table, stride);
            byte* row = table + r * stride;
            TF.RowFactors(row, dim, weights == null ? 1f : weights[j], out float scale, out float bias);
            for (int c = 0; c < n; c++) acc[c] = MathF.FusedMultiplyAdd(TF.LoadScalar(row, col + c), scale, acc[c]);
            if (TF.HasBias) biasSum += bias;
        }
        for (int c = 0; c < n; c++)
        {
            float v = TF.HasBias ? acc[c] + biasSum : acc[c];
            output[col + c] = job.Mean ? v * inv : v;
        }
        return true;
    }
}

internal unsafe struct Simd512 : ISimd<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float value) => Vector512.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> LoadFp32(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> LoadFp16(ushort* p) => HalfBits.ToSingle(Avx512F.ConvertToVector512Int32(Vector256.Load(p)).AsUInt32());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> LoadU8(byte* p) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(p)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> value, float* p) => value.Store(p);
}

internal unsafe struct Simd256 : ISimd<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float value) => Vector256.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> LoadFp32(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> LoadFp16(ushort* p) => HalfBits.ToSingle(Avx2.ConvertToVector256Int32(p).AsUInt32());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> LoadU8(byte* p) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> value, float* p) => value.Store(p);
}

internal unsafe struct Simd128 : ISimd<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Broadcast(float value) => Vector128.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;
    // SSE4.1 has no FMA; where the CPU has it the estimate is the fused instruction.
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> LoadFp32(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> LoadFp16(ushort* p) => HalfBits.ToSingle(Sse41.ConvertToVector128Int32(p).AsUInt32());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> LoadU8(byte* p) => Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> value, float* p) => value.Store(p);
}

/// <summary>The scalar level: the same loops with a one-float "vector".</summary>
internal unsafe struct SimdScalar : ISimd<float>
{
    public static int Count => 1;
    public static float Zero => 0f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Broadcast(float value) => value;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Add(float a, float b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Multiply(float a, float b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MultiplyAdd(float a, float b, float c) => MathF.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadFp32(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadFp16(ushort* p) => (float)*(Half*)p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadU8(byte* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float value, float* p) => *p = value;
}

/// <summary>IEEE half → single on vectors of zero-extended half bits (.NET 10 exposes no vcvtph2ps): move the
/// exponent and mantissa into place and rebias by multiplying with 2^112 (which also normalises half subnormals
/// exactly), force the all-ones exponent for Inf/NaN, then put the sign back.</summary>
internal static class HalfBits
{
    const uint Magic = 0x77800000;          // 2^112 as fp32 bits: 2^(127-15)
    const uint HalfInfShifted = 0x0F800000; // half exponent 31 after the << 13

    /// <summary>AVX-512 form: the two "x | (y &amp; constant)" merges are one vpternlogd each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector512<uint> h)
    {
        const byte AOrBAndC = 0xF0 | (0xCC & 0xAA);
        var m = (h << 13) & Vector512.Create(0x0FFFE000u);
        var f = (m.AsSingle() * Vector512.Create(Magic).AsSingle()).AsUInt32();
        var inf = Vector512.GreaterThanOrEqual(m.AsInt32(), Vector512.Create((int)HalfInfShifted)).AsUInt32();
        var withInf = Avx512F.TernaryLogic(f, inf, Vector512.Create(0x7F800000u), AOrBAndC);
        return Avx512F.TernaryLogic(withInf, h << 16, Vector512.Create(0x80000000u), AOrBAndC).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle(Vector256<uint> h)
    {
        var m = (h & Vector256.Create(0x7FFFu)) << 13;
        var f = (m.AsSingle() * Vector256.Create(Magic).AsSingle()).AsUInt32();
        // m ≤ 0x0FFFE000, so a signed compare is exact (and native on AVX2)
        var inf = Vector256.GreaterThanOrEqual(m.AsInt32(), Vector256.Create((int)HalfInfShifted)).AsUInt32() & Vector256.Create(0x7F800000u);
        return (f | inf | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ToSingle(Vector128<uint> h)
    {
        var m = (h & Vector128.Create(0x7FFFu)) << 13;
        var f = (m.AsSingle() * Vector128.Create(Magic).AsSingle()).AsUInt32();
        // m ≤ 0x0FFFE000, so a signed compare is exact (and native on AVX2)
        var inf = Vector128.GreaterThanOrEqual(m.AsInt32(), Vector128.Create((int)HalfInfShifted)).AsUInt32() & Vector128.Create(0x7F800000u);
        return (f | inf | ((h & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }
}
