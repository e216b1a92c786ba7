using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LiveDlrm.Embeddings;

/// <summary>One stored row at a time, dequantised into memory through the kernels' own row formats and SIMD levels
/// (<see cref="IRowFormat"/>, <see cref="ISimd{TV}"/>): the adapter's snapshots, merges and generic-dim lookups.</summary>
internal static unsafe class StoredRows
{
    /// <summary>acc[0..dim) += w · row, dequantising the stored row.</summary>
    public static void AddRow(EmbeddingStorage storage, byte* row, float w, float* acc, int dim)
    {
        switch (storage)
        {
            case EmbeddingStorage.Fp32: AddRow<Fp32Rows>(row, w, acc, dim); break;
            case EmbeddingStorage.Fp16: AddRow<Fp16Rows>(row, w, acc, dim); break;
            default: AddRow<Int8RowwiseRows>(row, w, acc, dim); break;
        }
    }

    /// <summary>acc[0..dim) += w · row for rows of format <typeparamref name="TF"/>: the weight folds into the row's
    /// scale and bias once, then Vector512 → Vector256 → scalar columns.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddRow<TF>(byte* row, float w, float* acc, int dim) where TF : IRowFormat
    {
        TF.RowFactors(row, dim, w, out float scale, out float bias);
        int c = 0;
        if (Avx512F.IsSupported) c = AddColumns<Simd512, Vector512<float>, TF>(row, scale, bias, acc, dim, c);
        if (Avx2.IsSupported && Fma.IsSupported) c = AddColumns<Simd256, Vector256<float>, TF>(row, scale, bias, acc, dim, c);
        for (; c < dim; c++) acc[c] = MathF.FusedMultiplyAdd(TF.LoadScalar(row, c), scale, TF.HasBias ? acc[c] + bias : acc[c]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int AddColumns<TS, TV, TF>(byte* row, float scale, float bias, float* acc, int dim, int c)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat
    {
        TV s = TS.Broadcast(scale), b = TS.Broadcast(bias);
        for (; c <= dim - TS.Count; c += TS.Count)
        {
            TV current = TF.HasBias ? TS.Add(TS.LoadFp32(acc + c), b) : TS.LoadFp32(acc + c);
            TS.Store(TS.MultiplyAdd(TF.Load<TS, TV>(row, c), s, current), acc + c);
        }
        return c;
    }

    /// <summary>W[row] of <paramref name="table"/> dequantised into <paramref name="destination"/> (dim floats).</summary>
    public static void Dequantise(EmbeddingTable table, long row, float* destination)
    {
        new Span<float>(destination, table.Dim).Clear();
        AddRow(table.Storage, table.DataPointer + row * table.RowStride, 1f, destination, table.Dim);
    }
}

/// <summary>The software prefetch of stored rows, shared by every lookup kernel.</summary>
internal static unsafe class RowPrefetch
{
    /// <summary>Touches every cache line of the <paramref name="stride"/> bytes at <paramref name="row"/>. Rows of
    /// up to 128 bytes (fp16 and int8 at dim 64) span at most three lines: first, last and the one 64 bytes in are
    /// touched without a loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Row(byte* row, long stride) => Row(row, stride, middleLine: stride > 64);

    /// <summary><see cref="Row(byte*, long)"/> with the line 64 bytes in touched only when
    /// <paramref name="middleLine"/> (<see cref="MayTouchThreeLines"/>, decided once a lookup): for a row of up to
    /// two lines the first and the last byte name every line, and a third prefetch of a line already asked for is an
    /// instruction in the loop that keeps no further row in flight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Row(byte* row, long stride, bool middleLine)
    {
        if (!Sse.IsSupported) return;
        if (stride <= 128)
        {
            Sse.Prefetch0(row);
            Sse.Prefetch0(row + stride - 1);
            if (middleLine) Sse.Prefetch0(row + 64);
            return;
        }
        byte* line = (byte*)((nuint)row & ~(nuint)63);
        byte* last = row + stride - 1;
        for (; line <= last; line += 64) Sse.Prefetch0(line);
    }

    /// <summary>Whether a row of <paramref name="stride"/> ≤ 128 bytes of a table whose rows start 64-byte aligned
    /// (<see cref="LiveDlrm.Memory.NativeBuffer"/>) can touch three cache lines: row starts are multiples of the
    /// stride's largest power-of-two divisor (capped at 64), so a row starts at most 64 minus that into a line. The
    /// int8 dim-64 row (72 bytes, 8-aligned) and the fp16 one (128 bytes, 64-aligned) never touch three.</summary>
    public static bool MayTouchThreeLines(long stride)
    {
        long alignment = Math.Min(stride & -stride, 64);
        return stride > 64 && 64 - alignment + stride > 128;
    }

    /// <summary>The row of lookup <paramref name="j"/> + <paramref name="distance"/>, when that lookup is still inside
    /// this thread's range of the batch. Its index is not checked yet (the kernel checks it when its turn comes): an
    /// index outside the table gives an address outside it, which a prefetch ignores (prefetches never fault).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Ahead<TI>(TI* indices, long j, int distance, long rangeEnd, byte* table, long stride) where TI : unmanaged, System.Numerics.IBinaryInteger<TI>
        => Ahead(indices, j, distance, rangeEnd, table, stride, middleLine: stride > 64);

    /// <inheritdoc cref="Ahead{TI}(TI*, long, int, long, byte*, long)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Ahead<TI>(TI* indices, long j, int distance, long rangeEnd, byte* table, long stride, bool middleLine) where TI : unmanaged, System.Numerics.IBinaryInteger<TI>
    {
        long p = j + distance;
        if (p >= rangeEnd) return;
        Row(table + long.CreateTruncating(indices[p]) * stride, stride, middleLine);
    }
}
