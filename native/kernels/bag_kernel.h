/* LiveDlrm native embedding-bag kernel: the engine's lookup loop in C, for the row formats where .NET cannot express
 * the instruction that makes the loop fast (fp16: vcvtph2ps, which .NET 10 does not expose). It sits behind the same
 * kernel interface as the C# kernels (engine/LiveDlrm.Engine/Embeddings/NativeBagKernel.cs), which pick it per
 * storage type and stay the portable fallback.
 *
 * Semantics (PyTorch/FBGEMM EmbeddingBag), for b in [bag_begin, bag_end), c in [0, dim):
 *
 *     output[b * dim + c] = m_b * sum over j in [offsets[b], offsets[b + 1]) of w_j * value(indices[j], c)
 *
 * with w_j = weights[j] (1 when weights is NULL), m_b = 1 / (bag length) when mean is set and the bag is not empty,
 * else 1; value(r, c) is row r, column c dequantised:
 *     FP32: ((const float *)(table + r * stride))[c]
 *     FP16: the IEEE half ((const uint16_t *)(table + r * stride))[c] widened to float (exact, Inf/NaN kept)
 *     INT8_ROWWISE (FBGEMM 8-bit rowwise, [uint8 q x dim][float scale][float bias]): q[c] * scale + bias
 * Accumulation is fp32 in index order. Indices and offsets are int32 or int64 (index_bytes 4 or 8), CSR offsets.
 *
 * Built for a generic x86-64 target; the AVX2 (+FMA+F16C) and AVX-512 (F+BW+VL) paths are compiled with per-file
 * target flags and chosen at run time from cpuid (livedlrm_kernel_supports), never executed on a CPU without them.
 *
 * Contract: no aborts. Every index is checked with one unsigned compare; the first index outside [0, rows) stops the
 * call with LIVEDLRM_KERNEL_BAD_INDEX and its position in *error_position (earlier bags are written, the failing bag
 * and later ones are not). Bad arguments or an ISA this CPU lacks return before anything is written. Offsets are
 * trusted to stay within indices (the C# side validates the whole batch first). */
#ifndef LIVEDLRM_BAG_KERNEL_H
#define LIVEDLRM_BAG_KERNEL_H

#include <stdint.h>

#ifndef LIVEDLRM_KERNEL_API
#define LIVEDLRM_KERNEL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum livedlrm_kernel_status {
    LIVEDLRM_KERNEL_OK = 0,
    LIVEDLRM_KERNEL_BAD_INDEX = 1,     /* indices[*error_position] outside [0, rows) */
    LIVEDLRM_KERNEL_BAD_ARGUMENT = 3,  /* null pointer, rows/dim/stride too small, reversed bag range, unknown dtype */
    LIVEDLRM_KERNEL_UNSUPPORTED = 4    /* this CPU (or build) lacks the requested ISA */
};

enum livedlrm_kernel_dtype { LIVEDLRM_KERNEL_FP32 = 0, LIVEDLRM_KERNEL_FP16 = 1, LIVEDLRM_KERNEL_INT8_ROWWISE = 2 };

enum livedlrm_kernel_isa {
    LIVEDLRM_KERNEL_ISA_AVX2 = 2,      /* AVX2 + FMA + F16C, 8 floats a vector */
    LIVEDLRM_KERNEL_ISA_AVX512 = 3     /* AVX-512 F + BW + VL, 16 floats a vector */
};

/* 1 when this CPU and build can run isa, else 0. */
LIVEDLRM_KERNEL_API int32_t livedlrm_kernel_supports(int32_t isa);

/* Pools bags [bag_begin, bag_end) into output (row b at output + b * dim). prefetch_distance: 0 = none; d > 0 = while
 * adding indices[j], prefetch every cache line of row indices[j + d] (within the range). */
LIVEDLRM_KERNEL_API int32_t livedlrm_kernel_bags(int32_t isa, int32_t dtype, int32_t index_bytes,
                                                 const void *table, int64_t rows, int64_t stride, int32_t dim,
                                                 const void *indices, const void *offsets, const float *weights,
                                                 int32_t mean, int64_t bag_begin, int64_t bag_end,
                                                 int32_t prefetch_distance, float *output, int64_t *error_position);

#ifdef __cplusplus
}
#endif

#endif
