using LiveDlrm.Embeddings;

namespace LiveDlrm.Perf.Lookup;

/// <summary>The one place the benchmarks name LiveDlrm's lookup kernel and its worker pool.</summary>
sealed class LiveDlrmKernel : IDisposable
{
    public int Threads { get; }

    public LiveDlrmKernel(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
    }

    // TEMPORARY until branch `kernels` (EmbeddingBag + EmbeddingWorkerPool) is merged: the scalar reference.
    public string Description => "EmbeddingBagReference (scalar, 1 thread; SIMD kernel not merged yet)";

    public void Forward(EmbeddingTable table, long[] indices, long[] offsets, float[] output) =>
        EmbeddingBagReference.Forward(table, indices, offsets, output);

    public void Dispose() { }
}
