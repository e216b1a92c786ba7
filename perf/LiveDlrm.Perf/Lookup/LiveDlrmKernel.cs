using LiveDlrm.Embeddings;

namespace LiveDlrm.Perf.Lookup;

/// <summary>The one place the benchmarks name LiveDlrm's lookup kernel and its worker pool. A run with N threads
/// is the calling thread plus N − 1 pool workers (the pool's caller works too), and the native reference is
/// dispatched through the same pool (<see cref="NativeRefContender"/>), so both use the same threads and the same
/// chunking of bags.</summary>
sealed class LiveDlrmKernel : IDisposable
{
    public int Threads { get; }
    public EmbeddingWorkerPool Pool { get; }

    public LiveDlrmKernel(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
        Pool = new EmbeddingWorkerPool(threads - 1);
    }

    public string Description =>
        $"EmbeddingBag.Forward ({EmbeddingKernels.IsaName(EmbeddingKernels.CurrentIsa)}, code fp32 {Code(EmbeddingStorage.Fp32)} / fp16 {Code(EmbeddingStorage.Fp16)} / int8 {Code(EmbeddingStorage.Int8Rowwise)}, prefetch tuned per table from fp32 {EmbeddingKernels.PrefetchDistanceFor(EmbeddingStorage.Fp32)} / fp16,int8 {EmbeddingKernels.PrefetchDistanceFor(EmbeddingStorage.Fp16)}, " +
        $"caller + {Pool.ThreadCount} pool workers)";

    static string Code(EmbeddingStorage s) => EmbeddingKernels.ImplementationFor(s).ToString().ToLowerInvariant();

    public void Forward(EmbeddingTable table, long[] indices, long[] offsets, float[] output) =>
        EmbeddingBag.Forward(table, indices, offsets, output, PoolingMode.Sum, default, Pool);

    public void Dispose() => Pool.Dispose();
}
