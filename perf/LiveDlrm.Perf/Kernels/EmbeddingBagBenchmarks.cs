using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Perf.Lookup;
using Perfolizer.Horology;

namespace LiveDlrm.Perf.Kernels;

/// <summary>BenchmarkDotNet view of the embedding-bag kernels: one batch of <see cref="Batch"/> bags per operation,
/// LiveDlrm's <see cref="EmbeddingBag.Forward(EmbeddingTable, ReadOnlySpan{long}, ReadOnlySpan{long}, Span{float}, PoolingMode, ReadOnlySpan{float}, EmbeddingWorkerPool?)"/>
/// against the native C reference (prefetch 16) on the same pool and batches. MemoryDiagnoser proves the lookup
/// path allocates nothing. The comparative figures with TorchSharp and the prefetch sweep are
/// <c>./build.sh bench lookup</c>; this is the per-shape view: <c>./build.sh bench bdn --filter '*EmbeddingBag*'</c>.</summary>
[MemoryDiagnoser]
[Config(typeof(ShortConfig))]
public class EmbeddingBagBenchmarks
{
    /// <summary>ShortRun (1 launch, 3 warm-up, 3 measured iterations) with 150 ms iterations: the whole grid
    /// (24 shapes × 2 methods) finishes in minutes on 2 cores. Longer, steadier figures: <c>--job Default</c>.
    /// The generated project rebuilds engine and interop (with TorchSharp) into its own output, which takes more
    /// than BenchmarkDotNet's default 120 s build timeout on a busy 2-core machine; <c>--inProcess</c> skips it.</summary>
    sealed class ShortConfig : ManualConfig
    {
        public ShortConfig()
        {
            AddJob(Job.ShortRun.WithIterationTime(TimeInterval.FromMilliseconds(150)));
            WithBuildTimeout(TimeSpan.FromMinutes(10));
        }
    }

    const int Batch = 2048;
    const int DistinctBatches = 8;

    [Params(64, 128)] public int Dim;
    [Params(8, 32)] public int Pooling;
    [Params(100_000L, 4L << 20)] public long Rows;
    // By name: BenchmarkDotNet's generated runner sets the parameters, and it cannot see the engine's internal types.
    [Params(nameof(EmbeddingStorage.Fp32), nameof(EmbeddingStorage.Fp16), nameof(EmbeddingStorage.Int8Rowwise))] public string Storage = "";

    EmbeddingTable _table = null!;
    LookupBatches _batches = null!;
    LiveDlrmKernel _kernel = null!;
    NativeRefContender? _native;
    float[] _output = null!;
    int _next;

    [GlobalSetup]
    public void Setup()
    {
        _table = EmbeddingTable.Create("bdn", Rows, Dim, Enum.Parse<EmbeddingStorage>(Storage));
        var random = new Random(1);
        var row = new float[Dim];
        for (long r = 0; r < Rows; r++)
        {
            for (int c = 0; c < Dim; c++) row[c] = (float)(random.NextDouble() * 2 - 1);
            _table.WriteRow(r, row);
        }
        _batches = new LookupBatches(Rows, Batch, Pooling, DistinctBatches, IdDistribution.Uniform, seed: 2);
        _kernel = new LiveDlrmKernel(Environment.ProcessorCount);
        _output = new float[Batch * Dim];
        if (NativeLibraries.IsAvailable(Libraries.KernelRef))
            _native = new NativeRefContender(_table, _batches, _kernel.Pool, prefetchDistance: 16);

        // Same check as the lookup run: no figure for a kernel that computes something else.
        var expected = new float[Batch * Dim];
        EmbeddingBagReference.Forward(_table, _batches.Indices[0], _batches.Offsets, expected);
        _kernel.Forward(_table, _batches.Indices[0], _batches.Offsets, _output);
        if (LookupRun.Compare(_output, expected) is { } bad) throw new InvalidOperationException($"LiveDlrm kernel disagrees with the reference: {bad}");
        if (_native is not null)
        {
            _native.Forward(0);
            if (LookupRun.Compare(_native.Output, expected) is { } badNative) throw new InvalidOperationException($"native reference disagrees: {badNative}");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _native?.Dispose();
        _kernel.Dispose();
        _table.Dispose();
    }

    [Benchmark(Baseline = true, Description = "LiveDlrm")]
    public void LiveDlrm()
    {
        int i = _next++ % DistinctBatches;
        _kernel.Forward(_table, _batches.Indices[i], _batches.Offsets, _output);
    }

    [Benchmark(Description = "NativeRef pf16")]
    public void NativeRef()
    {
        if (_native is null) throw new InvalidOperationException("liblivedlrm_ref.so not found (build with ./build.sh build)");
        _native.Forward(_next++ % DistinctBatches);
    }
}
