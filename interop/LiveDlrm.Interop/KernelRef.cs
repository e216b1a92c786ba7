using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>Bindings of native/ref (liblivedlrm_ref.so, header native/ref/embedding_ref.h): the C reference gather
/// the benchmarks compare LiveDlrm's kernels to. Check <c>NativeLibraries.IsAvailable(Libraries.KernelRef)</c>
/// before the first call.</summary>
internal static unsafe partial class KernelRef
{
    /// <summary>enum livedlrm_ref_status</summary>
    internal enum Status
    {
        Ok = 0,
        BadIndex = 1,
        BadOffsets = 2,
        BadArgument = 3,
        Unsupported = 4,
    }

    /// <summary>enum livedlrm_ref_dtype (same order as LiveDlrm.Embeddings.EmbeddingStorage).</summary>
    internal enum DType
    {
        Fp32 = 0,
        Fp16 = 1,
        Int8Rowwise = 2,
    }

    /// <summary>enum livedlrm_ref_isa</summary>
    internal enum Isa
    {
        Best = 0,
        Scalar = 1,
        Avx2 = 2,
        Avx512 = 3,
    }

    // int32_t livedlrm_ref_best_isa(void);
    [LibraryImport(Libraries.KernelRef, EntryPoint = "livedlrm_ref_best_isa")]
    internal static partial Isa BestIsa();

    // int32_t livedlrm_ref_bag_sum(int32_t dtype, int32_t isa, const void *table, int64_t rows, int32_t dim,
    //                              const int64_t *indices, const int64_t *offsets, int64_t bag_begin, int64_t bag_end,
    //                              int32_t prefetch_distance, float *output, int64_t *error_position);
    // Sum-pools bags [bagBegin, bagEnd); output row b lands at output + b * dim. Offsets are CSR (bags + 1 entries)
    // and are trusted to stay within indices: validate the batch on the managed side first. On BadIndex,
    // *errorPosition is the position in indices; bags of the range before the failing one are already written.
    [LibraryImport(Libraries.KernelRef, EntryPoint = "livedlrm_ref_bag_sum")]
    internal static partial Status BagSum(DType dtype, Isa isa, void* table, long rows, int dim,
                                          long* indices, long* offsets, long bagBegin, long bagEnd,
                                          int prefetchDistance, float* output, long* errorPosition);
}
