/* LiveDlrm native reference embedding-bag gather (sum pooling).
 *
 * It stands for "the machine's limit" in the benchmarks: a plain C gather with AVX-512 or AVX2 intrinsics,
 * compiled -O3 -march=native, with a runtime software-prefetch distance. The C# harness calls it from its own
 * worker threads, one bag range per thread, with the same partitioning as LiveDlrm's kernel.
 *
 * Semantics, for b in [bag_begin, bag_end), c in [0, dim):
 *
 *     output[b * dim + c] = sum over j in [offsets[b], offsets[b + 1]) of value(indices[j], c)
 *
 * where value(r, c) is row r, column c of the table, dequantised:
 *     FP32: ((const float *)table)[r * dim + c]
 *     FP16: IEEE half ((const uint16_t *)table)[r * dim + c], widened to float
 *     INT8_ROWWISE (FBGEMM's 8-bit rowwise; a row is [uint8 q x dim][float scale][float bias], dim + 8 bytes):
 *           q[c] * scale + bias
 * Rows are stored back to back (stride 4*dim, 2*dim, dim + 8 bytes). Accumulation is fp32 in index order.
 *
 * Offsets are CSR: offsets has at least bag_end + 1 entries and offsets[bag_begin..bag_end] is non-decreasing;
 * the caller owns their consistency with the length of indices (the C# side validates the whole batch).
 *
 * Contract: no aborts, no exceptions. Every index is checked with one unsigned compare; the first index outside
 * [0, rows) stops the call with LIVEDLRM_REF_BAD_INDEX and its position in *error_position (bags of the range
 * before the failing one are already written; the failing bag and later ones are not). Bad arguments return
 * LIVEDLRM_REF_BAD_ARGUMENT / LIVEDLRM_REF_BAD_OFFSETS before anything is written.
 */
#ifndef LIVEDLRM_EMBEDDING_REF_H
#define LIVEDLRM_EMBEDDING_REF_H

#include <stdint.h>

#ifndef LIVEDLRM_REF_API
#define LIVEDLRM_REF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum livedlrm_ref_status {
    LIVEDLRM_REF_OK = 0,
    LIVEDLRM_REF_BAD_INDEX = 1,      /* indices[*error_position] outside [0, rows) */
    LIVEDLRM_REF_BAD_OFFSETS = 2,    /* offsets decrease (or are negative) at *error_position */
    LIVEDLRM_REF_BAD_ARGUMENT = 3,   /* null pointer, rows/dim <= 0, bag range reversed, prefetch < 0, unknown dtype */
    LIVEDLRM_REF_UNSUPPORTED = 4     /* the requested ISA was not compiled in (compiler or CPU lacks it) */
};

enum livedlrm_ref_dtype {
    LIVEDLRM_REF_FP32 = 0,
    LIVEDLRM_REF_FP16 = 1,
    LIVEDLRM_REF_INT8_ROWWISE = 2
};

enum livedlrm_ref_isa {
    LIVEDLRM_REF_ISA_BEST = 0,       /* the widest compiled in */
    LIVEDLRM_REF_ISA_SCALAR = 1,
    LIVEDLRM_REF_ISA_AVX2 = 2,       /* AVX2 + FMA + F16C */
    LIVEDLRM_REF_ISA_AVX512 = 3      /* AVX-512 F + BW + VL */
};

/* The widest ISA compiled into this library (one of livedlrm_ref_isa, never BEST). */
LIVEDLRM_REF_API int32_t livedlrm_ref_best_isa(void);

/* Sum-pools bags [bag_begin, bag_end) into output (row b at output + b * dim). prefetch_distance: 0 = no software
 * prefetch; d > 0 = while adding indices[j], prefetch every cache line of row indices[j + d] (within the range). */
LIVEDLRM_REF_API int32_t livedlrm_ref_bag_sum(int32_t dtype, int32_t isa,
                                              const void *table, int64_t rows, int32_t dim,
                                              const int64_t *indices, const int64_t *offsets,
                                              int64_t bag_begin, int64_t bag_end,
                                              int32_t prefetch_distance,
                                              float *output, int64_t *error_position);

#ifdef __cplusplus
}
#endif

#endif
