using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LiveDlrm.Embeddings;

/// <summary>The vector width the embedding-bag kernels run at. Chosen once per process
/// (<see cref="EmbeddingKernels.SelectedIsa"/>); tests force a narrower level with <see cref="EmbeddingKernels.Force"/>.</summary>
internal enum KernelIsa
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

/// <summary>Which code runs a lookup: the C# kernels (every ISA level, any CPU) or the native kernel of
/// native/kernels (AVX2 + F16C and AVX-512 only), chosen per storage type (<see cref="EmbeddingKernels.ImplementationFor"/>).</summary>
internal enum KernelImplementation
{
    /// <summary>The C# kernels (EmbeddingBagKernel.cs): the portable path and the fallback.</summary>
    Managed,
    /// <summary>liblivedlrm_kernels.so (native/kernels): the same loop in C, where .NET cannot express the instruction
    /// (fp16: vcvtph2ps, absent from .NET 10).</summary>
    Native,
}

/// <summary>ISA selection and tuning knobs of the embedding-bag kernels.</summary>
internal static class EmbeddingKernels
{
    /// <summary>The widest level this process can run. Follows the runtime's own switches, so
    /// <c>DOTNET_EnableAVX512F=0</c> / <c>DOTNET_EnableAVX2=0</c> narrow it without any code here.</summary>
    public static KernelIsa SelectedIsa { get; } = Detect();

    [ThreadStatic] static KernelIsa? _forced;
    [ThreadStatic] static KernelImplementation _forcedImplementation;

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

    /// <summary>Like <see cref="Force"/>, with the code that runs the lookups forced too: <see cref="KernelImplementation.Native"/>
    /// needs <see cref="IsNativeSupported"/> at <paramref name="isa"/>.</summary>
    public static IDisposable Force(KernelIsa isa, KernelImplementation implementation)
    {
        if (implementation == KernelImplementation.Native && !IsNativeSupported(isa))
            throw new NotSupportedException($"the native kernel does not run at {isa} here (liblivedlrm_kernels.so missing, or the CPU lacks the level)");
        var scope = Force(isa);
        _forcedImplementation = implementation;
        return scope;
    }

    internal sealed class IsaScope(KernelIsa? previous) : IDisposable
    {
        readonly KernelImplementation _previousImplementation = _forcedImplementation;
        public void Dispose()
        {
            _forced = previous;
            _forcedImplementation = _previousImplementation;
        }
    }

    /// <summary>Whether the native kernel can run at <paramref name="isa"/>: the library is there, the level is one it
    /// has (Vector256: AVX2 + FMA + F16C; Vector512: AVX-512 F + BW + VL), the CPU has it, and the runtime has not been
    /// told to stay narrower (so <c>DOTNET_EnableAVX512=0</c> keeps the native kernel at AVX2 as well).</summary>
    public static bool IsNativeSupported(KernelIsa isa) => isa switch
    {
        KernelIsa.Vector512 => NativeAvx512.Value && IsSupported(isa) && SelectedIsa >= KernelIsa.Vector512,
        KernelIsa.Vector256 => NativeAvx2.Value && IsSupported(isa) && SelectedIsa >= KernelIsa.Vector256,
        _ => false,
    };

    static readonly Lazy<bool> NativeAvx2 = new(() => NativeBagKernel.Supports(KernelIsa.Vector256));
    static readonly Lazy<bool> NativeAvx512 = new(() => NativeBagKernel.Supports(KernelIsa.Vector512));

    /// <summary>The code a lookup on <paramref name="storage"/> rows started on this thread runs: the forced one inside a
    /// <see cref="Force(KernelIsa, KernelImplementation)"/> scope (<see cref="Force(KernelIsa)"/> alone forces the C#
    /// kernels), else the measured default of the storage type (<see cref="NativeByDefault"/>) when the native kernel
    /// runs at <see cref="CurrentIsa"/>, else the C# kernels.</summary>
    public static KernelImplementation ImplementationFor(EmbeddingStorage storage) =>
        _forced is not null ? _forcedImplementation
        : NativeByDefault(storage) && IsNativeSupported(SelectedIsa) ? KernelImplementation.Native
        : KernelImplementation.Managed;

    /// <summary>The storage types whose lookups the native kernel runs by default, chosen by measurement
    /// (<c>./build.sh bench lookup</c>, docs/kernels.md): fp16 only, where .NET 10 lacks vcvtph2ps; on a quiet host
    /// the C# kernels were level with or ahead of the native one for fp32 and int8 in 7 of 8 cases.</summary>
    internal static bool NativeByDefault(EmbeddingStorage storage) => storage == EmbeddingStorage.Fp16;

    /// <summary>A prefetch distance (rows ahead of the one being added; 0 disables software prefetch) forced for
    /// every storage type, for tuning sweeps (<c>livedlrm demo --prefetch N</c>); reading it without an override
    /// gives the fp32 default. <see cref="ResetPrefetchDistance"/> returns to the per-storage defaults.</summary>
    public static int PrefetchDistance
    {
        get => _prefetchOverride >= 0 ? _prefetchOverride : DefaultPrefetchDistance;
        set => _prefetchOverride = value is >= 0 and <= 1024 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "prefetch distance must be in [0, 1024] rows");
    }

    public static void ResetPrefetchDistance() => _prefetchOverride = -1;

    /// <summary>The distance lookups on <paramref name="storage"/> rows start with: a new table's until its
    /// <see cref="PrefetchTuner"/> has timed its own lookups.</summary>
    public static int PrefetchDistanceFor(EmbeddingStorage storage) => _prefetchOverride >= 0 ? _prefetchOverride : DefaultPrefetchDistanceFor(storage);

    /// <summary>The storage type's default, ignoring any override (a new table's starting point).</summary>
    internal static int DefaultPrefetchDistanceFor(EmbeddingStorage storage) =>
        storage == EmbeddingStorage.Fp32 ? DefaultPrefetchDistance : DefaultPrefetchDistanceQuantised;

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
