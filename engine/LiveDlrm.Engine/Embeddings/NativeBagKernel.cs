using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using LiveDlrm.Interop;

namespace LiveDlrm.Embeddings;

/// <summary>The native kernel (native/kernels, liblivedlrm_kernels.so) behind the same <see cref="BagJob"/> kernel
/// pointer as <see cref="BagKernel"/>: same semantics (sum / mean / weighted, fp32 / fp16 / int8 rowwise, int and long
/// indices, any dim), same bounds check per index, same prefetch distance, one call per chunk of bags. It exists
/// because .NET 10 has no vcvtph2ps: the C# fp16 loop widens halves with ~8 integer ops per vector. Selected per
/// storage type by <see cref="EmbeddingKernels.ImplementationFor"/>; the C# kernels stay the portable fallback.</summary>
internal static unsafe class NativeBagKernel
{
    /// <summary>Whether the library is present and the CPU has the level (Vector256 or Vector512 only).</summary>
    public static bool Supports(KernelIsa isa) =>
        isa is KernelIsa.Vector256 or KernelIsa.Vector512 && NativeLibraries.IsAvailable(Libraries.Kernels) &&
        KernelNative.Supports(isa == KernelIsa.Vector512 ? KernelNative.Isa.Avx512 : KernelNative.Isa.Avx2) != 0;

    /// <summary>The kernel for <paramref name="isa"/> (Vector256 or Vector512; <see cref="EmbeddingKernels.IsNativeSupported"/>).</summary>
    public static delegate*<in BagJob, int, int, bool> Select<TI>(KernelIsa isa, EmbeddingStorage storage)
        where TI : unmanaged, IBinaryInteger<TI> => (isa, storage) switch
    {
        (KernelIsa.Vector512, EmbeddingStorage.Fp32) => &Run<Simd512, Vector512<float>, Fp32Rows, TI>,
        (KernelIsa.Vector512, EmbeddingStorage.Fp16) => &Run<Simd512, Vector512<float>, Fp16Rows, TI>,
        (KernelIsa.Vector512, _) => &Run<Simd512, Vector512<float>, Int8RowwiseRows, TI>,
        (KernelIsa.Vector256, EmbeddingStorage.Fp32) => &Run<Simd256, Vector256<float>, Fp32Rows, TI>,
        (KernelIsa.Vector256, EmbeddingStorage.Fp16) => &Run<Simd256, Vector256<float>, Fp16Rows, TI>,
        (KernelIsa.Vector256, _) => &Run<Simd256, Vector256<float>, Int8RowwiseRows, TI>,
        _ => throw new NotSupportedException($"the native kernel has no {isa} level"),
    };

    /// <summary>Bags [bagBegin, bagEnd) of <paramref name="job"/>: the C# kernel's signature, so the pool and the
    /// caller run it alike. The width (TS) and row format (TF) name the native ISA and dtype.</summary>
    public static bool Run<TS, TV, TF, TI>(in BagJob job, int bagBegin, int bagEnd)
        where TS : ISimd<TV> where TV : struct where TF : IRowFormat where TI : unmanaged, IBinaryInteger<TI>
    {
        var isa = typeof(TS) == typeof(Simd512) ? KernelNative.Isa.Avx512 : KernelNative.Isa.Avx2;
        var dtype = typeof(TF) == typeof(Fp32Rows) ? KernelNative.DType.Fp32
                  : typeof(TF) == typeof(Fp16Rows) ? KernelNative.DType.Fp16 : KernelNative.DType.Int8Rowwise;
        long errorPosition;
        var status = KernelNative.Bags(isa, dtype, Unsafe.SizeOf<TI>(), job.Table, job.Rows, job.Stride, job.Dim,
                                       job.Indices, job.Offsets, job.Weights, job.Mean ? 1 : 0, bagBegin, bagEnd,
                                       job.PrefetchDistance, job.Output, &errorPosition);
        // BadArgument / Unsupported cannot happen after validation and selection; like a bad index they stop the
        // lookup with the caller's one exception rather than a throw on a pool worker.
        return status == KernelNative.Status.Ok;
    }
}
