using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LiveDlrm.Embeddings;

/// <summary>Pooled embedding lookups (PyTorch/FBGEMM <c>EmbeddingBag</c> semantics) with SIMD kernels over the
/// native table, multi-threaded over bags on an <see cref="EmbeddingWorkerPool"/>.
/// <para>Batch: CSR <paramref name="offsets"/> with bags + 1 entries, offsets[0] == 0, non-decreasing,
/// offsets[bags] == indices.Length; bag b pools rows indices[offsets[b] .. offsets[b+1]) into
/// output[b·dim .. (b+1)·dim). Sum, mean (empty bag → zeros) or weighted sum (one weight per index).</para>
/// <para>Bad input throws <see cref="ArgumentException"/> / <see cref="ArgumentOutOfRangeException"/> naming the table,
/// the position and the value. The table, offsets, weights and output length are checked before anything is written
/// (<see cref="EmbeddingBagValidation.ValidateShape{TIndex, TOffset}"/>); the indices are checked by the kernels in
/// their loop, one predicted compare each, instead of in a pass of their own, so an index outside the table is found
/// during the lookup: the call then zeroes the output's bags × dim floats before it throws (no partial sums are left;
/// floats past them are never touched). Callers that need the output untouched on a bad index validate the whole
/// batch first (<see cref="EmbeddingBagValidation.Validate{TIndex, TOffset}"/>, as the multi-table lookup does). No
/// managed allocation per call.</para></summary>
internal static unsafe class EmbeddingBag
{
    /// <summary>Batches with fewer lookups than this run on the calling thread alone: below it, waking the pool
    /// costs more than the second core gains (see docs/kernels.md).</summary>
    internal const int ParallelThresholdLookups = 4096;

    /// <param name="pool">Worker threads to spread the bags over; null uses <see cref="EmbeddingWorkerPool.Shared"/>.
    /// A pool with 0 threads runs everything on the calling thread.</param>
    public static void Forward(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, EmbeddingWorkerPool? pool = null)
    {
        int bags = EmbeddingBagValidation.ValidateShape(table, indices, offsets, output.Length, pooling, weights);
        bool ok;
        fixed (long* i = indices)
        fixed (long* o = offsets)
        fixed (float* y = output)
        fixed (float* w = weights)
            ok = Execute<long>(table, i, o, y, w, bags, indices.Length, pooling, pool);
        if (!ok) Reject(table, indices, output[..(bags * table.Dim)]);
    }

    /// <inheritdoc cref="Forward(EmbeddingTable, ReadOnlySpan{long}, ReadOnlySpan{long}, Span{float}, PoolingMode, ReadOnlySpan{float}, EmbeddingWorkerPool?)"/>
    public static void Forward(EmbeddingTable table, ReadOnlySpan<int> indices, ReadOnlySpan<int> offsets, Span<float> output,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default, EmbeddingWorkerPool? pool = null)
    {
        int bags = EmbeddingBagValidation.ValidateShape(table, indices, offsets, output.Length, pooling, weights);
        bool ok;
        fixed (int* i = indices)
        fixed (int* o = offsets)
        fixed (float* y = output)
        fixed (float* w = weights)
            ok = Execute<int>(table, i, o, y, w, bags, indices.Length, pooling, pool);
        if (!ok) Reject(table, indices, output[..(bags * table.Dim)]);
    }

    /// <summary>A kernel stopped at an index outside the table: no partial sums are left in the output, and the
    /// exception names the first bad index (found again here; the error path may be slow).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void Reject<TI>(EmbeddingTable table, ReadOnlySpan<TI> indices, Span<float> output) where TI : unmanaged, IBinaryInteger<TI>
    {
        output.Clear();
        EmbeddingBagValidation.CheckIndices(table, indices);
        throw new InvalidOperationException($"table '{table.Name}': an index went out of range during the lookup but none is out of range now; was the batch modified concurrently?");
    }

    /// <summary>False when a kernel found an index outside the table (the bags it had done are written).</summary>
    static bool Execute<TI>(EmbeddingTable table, TI* indices, TI* offsets, float* output, float* weights, int bags, int lookups,
                            PoolingMode pooling, EmbeddingWorkerPool? pool)
        where TI : unmanaged, IBinaryInteger<TI>
    {
        if (bags == 0) return true;
        int turn = -1;
        int distance = EmbeddingKernels.PrefetchDistanceOverridden ? EmbeddingKernels.PrefetchDistance : table.Prefetch.Next(lookups, out turn);
        var job = new BagJob
        {
            Table = table.DataPointer,
            Rows = table.Rows,
            Stride = table.RowStride,
            Dim = table.Dim,
            Indices = indices,
            Offsets = offsets,
            Output = output,
            Weights = pooling == PoolingMode.WeightedSum ? weights : null,
            Mean = pooling == PoolingMode.Mean,
            Bags = bags,
            PrefetchDistance = distance,
            Kernel = EmbeddingKernels.ImplementationFor(table.Storage) == KernelImplementation.Native
                ? NativeBagKernel.Select<TI>(EmbeddingKernels.CurrentIsa, table.Storage)
                : SelectKernel<TI>(EmbeddingKernels.CurrentIsa, table.Storage),
        };
        bool ok, timed = turn >= 0;
        long started = timed ? Stopwatch.GetTimestamp() : 0;
        pool ??= EmbeddingWorkerPool.Shared;
        if (lookups < ParallelThresholdLookups || bags < 2 || pool.ThreadCount == 0 || !pool.TryRun(in job, out ok))
        {
            // A pool busy with another caller's lookup leaves this one to one thread: not comparable, not recorded.
            timed &= pool.ThreadCount == 0 || bags < 2;
            ok = job.Kernel(in job, 0, bags);
        }
        if (timed && ok) table.Prefetch.Record(turn, Stopwatch.GetTimestamp() - started, lookups);
        GC.KeepAlive(table);    // the native rows must outlive the kernels even if the caller drops the table
        return ok;
    }

    internal static delegate*<in BagJob, int, int, bool> SelectKernel<TI>(KernelIsa isa, EmbeddingStorage storage)
        where TI : unmanaged, IBinaryInteger<TI> => isa switch
    {
        KernelIsa.Vector512 => storage switch
        {
            EmbeddingStorage.Fp32 => &BagKernel.Run<Simd512, Vector512<float>, Fp32Rows, TI>,
            EmbeddingStorage.Fp16 => &BagKernel.Run<Simd512, Vector512<float>, Fp16Rows, TI>,
            _ => &BagKernel.Run<Simd512, Vector512<float>, Int8RowwiseRows, TI>,
        },
        KernelIsa.Vector256 => storage switch
        {
            EmbeddingStorage.Fp32 => &BagKernel.Run<Simd256, Vector256<float>, Fp32Rows, TI>,
            EmbeddingStorage.Fp16 => &BagKernel.Run<Simd256, Vector256<float>, Fp16Rows, TI>,
            _ => &BagKernel.Run<Simd256, Vector256<float>, Int8RowwiseRows, TI>,
        },
        KernelIsa.Vector128 => storage switch
        {
            EmbeddingStorage.Fp32 => &BagKernel.Run<Simd128, Vector128<float>, Fp32Rows, TI>,
            EmbeddingStorage.Fp16 => &BagKernel.Run<Simd128, Vector128<float>, Fp16Rows, TI>,
            _ => &BagKernel.Run<Simd128, Vector128<float>, Int8RowwiseRows, TI>,
        },
        _ => storage switch
        {
            EmbeddingStorage.Fp32 => &BagKernel.Run<SimdScalar, float, Fp32Rows, TI>,
            EmbeddingStorage.Fp16 => &BagKernel.Run<SimdScalar, float, Fp16Rows, TI>,
            _ => &BagKernel.Run<SimdScalar, float, Int8RowwiseRows, TI>,
        },
    };
}
