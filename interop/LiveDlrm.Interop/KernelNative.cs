using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>Bindings of native/kernels (liblivedlrm_kernels.so, header native/kernels/bag_kernel.h): the engine's
/// native embedding-bag kernel. Check <c>NativeLibraries.IsAvailable(Libraries.Kernels)</c> before the first call.</summary>
internal static unsafe partial class KernelNative
{
    /// <summary>enum livedlrm_kernel_status</summary>
    internal enum Status
    {
        Ok = 0,
        BadIndex = 1,
        BadArgument = 3,
        Unsupported = 4,
    }

    /// <summary>enum livedlrm_kernel_dtype (same order as LiveDlrm.Embeddings.EmbeddingStorage).</summary>
    internal enum DType
    {
        Fp32 = 0,
        Fp16 = 1,
        Int8Rowwise = 2,
    }

    /// <summary>enum livedlrm_kernel_isa</summary>
    internal enum Isa
    {
        Avx2 = 2,
        Avx512 = 3,
    }

    // int32_t livedlrm_kernel_supports(int32_t isa);
    [LibraryImport(Libraries.Kernels, EntryPoint = "livedlrm_kernel_supports")]
    internal static partial int Supports(Isa isa);

    // int32_t livedlrm_kernel_bags(int32_t isa, int32_t dtype, int32_t index_bytes, const void *table, int64_t rows,
    //                              int64_t stride, int32_t dim, const void *indices, const void *offsets,
    //                              const float *weights, int32_t mean, int64_t bag_begin, int64_t bag_end,
    //                              int32_t prefetch_distance, float *output, int64_t *error_position);
    // Pools bags [bagBegin, bagEnd) (sum, or mean when mean != 0; weighted when weights is not null) with int32 or
    // int64 indices and offsets (indexBytes 4 / 8). Offsets are trusted to stay within indices: validate the batch on
    // the managed side first. On BadIndex, *errorPosition is the position in indices.
    [LibraryImport(Libraries.Kernels, EntryPoint = "livedlrm_kernel_bags")]
    internal static partial Status Bags(Isa isa, DType dtype, int indexBytes, void* table, long rows, long stride, int dim,
                                        void* indices, void* offsets, float* weights, int mean, long bagBegin, long bagEnd,
                                        int prefetchDistance, float* output, long* errorPosition);
}
