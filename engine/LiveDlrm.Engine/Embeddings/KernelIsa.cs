using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LiveDlrm.Embeddings;

/// <summary>The vector width the embedding-bag kernels run at. Chosen once per process
/// (<see cref="EmbeddingKernels.SelectedIsa"/>); tests force a narrower level with <see cref="EmbeddingKernels.Force"/>.</summary>
public enum KernelIsa
{
    /// <summary>One float at a time (any CPU).</summary>
    Scalar,
    /// <summary>4 floats: SSE4.1 (zero-extending loads for fp16/int8 rows), FMA where present.</summary>
    Vector128,
    /// <summary>8 floats: AVX2 + FMA.</summary>
    Vector256,
    /// <summary>16 floats: AVX-512F.</summary>
    Vector512,
}

/// <summary>ISA selection and tuning knobs of the embedding-bag kernels.</summary>
public static class EmbeddingKernels
{
    /// <summary>The widest level this process can run. Follows the runtime's own switches, so
    /// <c>DOTNET_EnableAVX512F=0</c> / <c>DOTNET_EnableAVX2=0</c> narrow it without any code here.</summary>
    public static KernelIsa SelectedIsa { get; } = Detect();

    [ThreadStatic] static KernelIsa? _forced;

    /// <summary>The level a lookup started on this thread uses now: the forced one inside a <see cref="Force"/>
    /// scope, else <see cref="SelectedIsa"/>.</summary>
    public static KernelIsa CurrentIsa => _forced ?? SelectedIsa;

    public static bool IsSupported(KernelIsa isa) => isa switch
    {
        KernelIsa.Scalar => true,
        KernelIsa.Vector128 => Sse41.IsSupported,
        KernelIsa.Vector256 => Avx2.IsSupported && Fma.IsSupported,
        KernelIsa.Vector512 => Avx512F.IsSupported,
        _ => false,
    };

    static KernelIsa Detect() =>
        IsSupported(KernelIsa.Vector512) && Vector512.IsHardwareAccelerated ? KernelIsa.Vector512
        : IsSupported(KernelIsa.Vector256) && Vector256.IsHardwareAccelerated ? KernelIsa.Vector256
        : IsSupported(KernelIsa.Vector128) && Vector128.IsHardwareAccelerated ? KernelIsa.Vector128
        : KernelIsa.Scalar;

    /// <summary>Short name of a level for backend names and logs ("avx512", "avx2", "sse4", "scalar").</summary>
    public static string IsaName(KernelIsa isa) => isa switch
    {
        KernelIsa.Vector512 => "avx512",
        KernelIsa.Vector256 => "avx2",
        KernelIsa.Vector128 => "sse4",
        _ => "scalar",
    };

    /// <summary>Forces lookups started on the calling thread (including the pool work they fan out) to run at
    /// <paramref name="isa"/> until the returned scope is disposed. For tests, benchmarks and diagnostics (`livedlrm demo --isa`).</summary>
    public static IDisposable Force(KernelIsa isa)
    {
        if (!IsSupported(isa)) throw new NotSupportedException($"kernel ISA {isa} is not supported on this CPU / runtime configuration");
        var scope = new IsaScope(_forced);
        _forced = isa;
        return scope;
    }

    internal sealed class IsaScope(KernelIsa? previous) : IDisposable
    {
        public void Dispose() => _forced = previous;
    }

    /// <summary>A prefetch distance (rows ahead of the one being added; 0 disables software prefetch) forced for
    /// every storage type, for tuning sweeps (<c>livedlrm demo --prefetch N</c>); reading it without an override
    /// gives the fp32 default. <see cref="ResetPrefetchDistance"/> returns to the per-storage defaults.</summary>
    public static int PrefetchDistance
    {
        get => _prefetchOverride >= 0 ? _prefetchOverride : DefaultPrefetchDistance;
        set => _prefetchOverride = value is >= 0 and <= 1024 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "prefetch distance must be in [0, 1024] rows");
    }

    public static void ResetPrefetchDistance() => _prefetchOverride = -1;

    /// <summary>The distance a lookup on <paramref name="storage"/> rows uses (read once at the start of each lookup).</summary>
    public static int PrefetchDistanceFor(EmbeddingStorage storage) =>
        _prefetchOverride >= 0 ? _prefetchOverride : storage == EmbeddingStorage.Fp32 ? DefaultPrefetchDistance : DefaultPrefetchDistanceQuantised;

    public static bool PrefetchDistanceOverridden => _prefetchOverride >= 0;

    static volatile int _prefetchOverride = -1;

    // fp32: with the table on 2 MiB pages the hardware prefetchers and out-of-order loads already keep enough rows in
    // flight and software prefetch only adds instructions (4 M rows, uniform: 57 M lookups/s at 0 against 45 at 16;
    // the C reference behaves the same). FBGEMM's 16 helps where tables sit on 4 KiB pages (TLB misses); re-sweep with
    // ./build.sh bench lookup --livedlrm-prefetch 0,8,16 on machines without transparent huge pages.
    internal const int DefaultPrefetchDistance = 0;

    // fp16 / int8 rows cost more instructions each (widening, scale and bias), so fewer rows are in flight and
    // software prefetch pays again (int8, 4 M rows, uniform: 50 M lookups/s at 16 against 32 at 0).
    internal const int DefaultPrefetchDistanceQuantised = 16;
}
