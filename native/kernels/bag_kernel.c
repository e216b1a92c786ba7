/* Entry points of liblivedlrm_kernels (bag_kernel.h): argument checks and the run-time ISA dispatch. This file is
 * compiled for a generic x86-64 target; the vector paths live in bag_kernel_avx2.c / bag_kernel_avx512.c. */
#include "bag_kernel.h"

#include <stddef.h>

int32_t livedlrm_kernel_avx2_run(int32_t dtype, int32_t index_bytes, const void *table, int64_t rows, int64_t stride,
                                 int32_t dim, const void *indices, const void *offsets, const float *weights,
                                 int32_t mean, int64_t b0, int64_t b1, int32_t pf, float *output, int64_t *ep);
int32_t livedlrm_kernel_avx512_run(int32_t dtype, int32_t index_bytes, const void *table, int64_t rows, int64_t stride,
                                   int32_t dim, const void *indices, const void *offsets, const float *weights,
                                   int32_t mean, int64_t b0, int64_t b1, int32_t pf, float *output, int64_t *ep);

int32_t livedlrm_kernel_supports(int32_t isa)
{
    /* libgcc's cpuid view, which also checks that the OS saves the wide registers (XCR0). */
    __builtin_cpu_init();
    switch (isa) {
    case LIVEDLRM_KERNEL_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case LIVEDLRM_KERNEL_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    default:
        return 0;
    }
}

int32_t livedlrm_kernel_bags(int32_t isa, int32_t dtype, int32_t index_bytes,
                             const void *table, int64_t rows, int64_t stride, int32_t dim,
                             const void *indices, const void *offsets, const float *weights,
                             int32_t mean, int64_t bag_begin, int64_t bag_end,
                             int32_t prefetch_distance, float *output, int64_t *error_position)
{
    if (error_position == NULL) return LIVEDLRM_KERNEL_BAD_ARGUMENT;
    *error_position = -1;
    if (table == NULL || indices == NULL || offsets == NULL || output == NULL || rows <= 0 || dim <= 0 ||
        (index_bytes != 4 && index_bytes != 8) || bag_begin < 0 || bag_end < bag_begin || prefetch_distance < 0)
        return LIVEDLRM_KERNEL_BAD_ARGUMENT;
    int64_t min_stride;
    switch (dtype) {
    case LIVEDLRM_KERNEL_FP32: min_stride = (int64_t)dim * 4; break;
    case LIVEDLRM_KERNEL_FP16: min_stride = (int64_t)dim * 2; break;
    case LIVEDLRM_KERNEL_INT8_ROWWISE: min_stride = (int64_t)dim + 8; break;
    default: return LIVEDLRM_KERNEL_BAD_ARGUMENT;
    }
    if (stride < min_stride) return LIVEDLRM_KERNEL_BAD_ARGUMENT;
    if (!livedlrm_kernel_supports(isa)) return LIVEDLRM_KERNEL_UNSUPPORTED;
    if (isa == LIVEDLRM_KERNEL_ISA_AVX512)
        return livedlrm_kernel_avx512_run(dtype, index_bytes, table, rows, stride, dim, indices, offsets, weights, mean,
                                          bag_begin, bag_end, prefetch_distance, output, error_position);
    return livedlrm_kernel_avx2_run(dtype, index_bytes, table, rows, stride, dim, indices, offsets, weights, mean,
                                    bag_begin, bag_end, prefetch_distance, output, error_position);
}
