/* The loop of livedlrm_kernel_bags, written once and included by bag_kernel_avx512.c and bag_kernel_avx2.c, each
 * compiled with its own target flags after defining the vector type and operations:
 *
 *   VEC, LANES (floats a vector), NVEC (vectors a column block; LANES * NVEC == 64), KFN(name) (per-ISA name)
 *   v_zero(), v_set1(x), v_add(a, b), v_mul(a, b), v_fma(a, b, c) = a * b + c
 *   v_load_f32 / v_load_f16 / v_load_u8 (p, n): n values at p widened to float (n < LANES: the rest zero, nothing
 *   read past p + n), v_store(p, v, n): the first n lanes
 *
 * Shape (after FBGEMM's): the output columns of a bag stay in NVEC registers while the bag's rows are added (a
 * 64-float block; wider rows take further passes, whose rows are in L1 by then), one unsigned compare per index,
 * and, on the first pass only, every cache line of row indices[j + prefetch] is prefetched while adding indices[j].
 * dtype, index width, weights and full/partial block are constants in each specialisation. */
#include "bag_kernel.h"

#include <stddef.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define BLOCK 64

INLINE int64_t KFN(index_at)(const void *p, int64_t j, int wide)
{
    return wide ? ((const int64_t *)p)[j] : (int64_t)((const int32_t *)p)[j];
}

INLINE void KFN(prefetch_ahead)(const uint8_t *table, int64_t rows, int64_t stride, const void *indices, int wide,
                                int64_t j, int32_t distance, int64_t range_end)
{
    int64_t p = j + distance;
    if (p >= range_end) return;
    int64_t r = KFN(index_at)(indices, p, wide);
    if ((uint64_t)r >= (uint64_t)rows) return;    /* reported when its turn comes; no wild address */
    uintptr_t first = (uintptr_t)(table + r * stride) & ~(uintptr_t)63;
    uintptr_t last = (uintptr_t)(table + r * stride + stride - 1) & ~(uintptr_t)63;
    for (uintptr_t line = first; line <= last; line += 64) __builtin_prefetch((const void *)line, 0, 3);
}

INLINE VEC KFN(load)(int dtype, const uint8_t *row, int32_t c, int32_t n)
{
    if (dtype == LIVEDLRM_KERNEL_FP32) return v_load_f32((const float *)row + c, n);
    if (dtype == LIVEDLRM_KERNEL_FP16) return v_load_f16((const uint16_t *)row + c, n);
    return v_load_u8(row + c, n);
}

/* One bag, columns [c, c + w) (w <= 64; full: w == 64, a constant at each call site). */
INLINE int32_t KFN(block)(int dtype, int wide, int weighted, int full,
                          const uint8_t *table, int64_t rows, int64_t stride, int32_t dim,
                          const void *indices, const float *weights, int64_t s, int64_t e, int32_t c, int32_t w,
                          int32_t prefetch, int64_t range_end, float multiplier, float *out, int64_t *error_position)
{
    VEC a[NVEC];
    for (int k = 0; k < NVEC; k++) a[k] = v_zero();
    float bias_sum = 0.0f;
    for (int64_t j = s; j < e; j++) {
        int64_t r = KFN(index_at)(indices, j, wide);
        if ((uint64_t)r >= (uint64_t)rows) { *error_position = j; return LIVEDLRM_KERNEL_BAD_INDEX; }
        if (prefetch > 0) KFN(prefetch_ahead)(table, rows, stride, indices, wide, j, prefetch, range_end);
        const uint8_t *row = table + r * stride;
        if (dtype == LIVEDLRM_KERNEL_INT8_ROWWISE) {
            /* sum(q*scale + bias) = sum(q*scale) + sum(bias): one fma a vector, the (weighted) bias once a row */
            float scale, bias;
            memcpy(&scale, row + dim, 4);
            memcpy(&bias, row + dim + 4, 4);
            if (weighted) { scale *= weights[j]; bias *= weights[j]; }
            VEC vs = v_set1(scale);
            bias_sum += bias;
            for (int k = 0; k < NVEC; k++)   /* constant trip count: unrolled, a[] stays in registers */
                if (full || LANES * k < w) a[k] = v_fma(KFN(load)(dtype, row, c + LANES * k, full ? LANES : w - LANES * k), vs, a[k]);
        } else if (weighted) {
            VEC vs = v_set1(weights[j]);
            for (int k = 0; k < NVEC; k++)
                if (full || LANES * k < w) a[k] = v_fma(KFN(load)(dtype, row, c + LANES * k, full ? LANES : w - LANES * k), vs, a[k]);
        } else {
            for (int k = 0; k < NVEC; k++)
                if (full || LANES * k < w) a[k] = v_add(a[k], KFN(load)(dtype, row, c + LANES * k, full ? LANES : w - LANES * k));
        }
    }
    VEC bias = v_set1(bias_sum), m = v_set1(multiplier);
    for (int k = 0; k < NVEC; k++) {
        if (!full && LANES * k >= w) break;
        VEC v = dtype == LIVEDLRM_KERNEL_INT8_ROWWISE ? v_add(a[k], bias) : a[k];
        if (multiplier != 1.0f) v = v_mul(v, m);
        v_store(out + c + LANES * k, v, full ? LANES : w - LANES * k);
    }
    return LIVEDLRM_KERNEL_OK;
}

INLINE int32_t KFN(bags)(int dtype, int wide, int weighted,
                         const uint8_t *table, int64_t rows, int64_t stride, int32_t dim,
                         const void *indices, const void *offsets, const float *weights, int32_t mean,
                         int64_t b0, int64_t b1, int32_t prefetch, float *output, int64_t *error_position)
{
    const int64_t range_end = KFN(index_at)(offsets, b1, wide);
    for (int64_t b = b0; b < b1; b++) {
        int64_t s = KFN(index_at)(offsets, b, wide), e = KFN(index_at)(offsets, b + 1, wide);
        float multiplier = mean && e > s ? 1.0f / (float)(e - s) : 1.0f;
        float *out = output + b * dim;
        for (int32_t c = 0; c < dim; c += BLOCK) {
            int32_t w = dim - c < BLOCK ? dim - c : BLOCK;
            int32_t pf = c == 0 ? prefetch : 0;   /* later passes find the bag's rows in cache */
            int32_t st = w == BLOCK
                ? KFN(block)(dtype, wide, weighted, 1, table, rows, stride, dim, indices, weights, s, e, c, w, pf, range_end, multiplier, out, error_position)
                : KFN(block)(dtype, wide, weighted, 0, table, rows, stride, dim, indices, weights, s, e, c, w, pf, range_end, multiplier, out, error_position);
            if (st != LIVEDLRM_KERNEL_OK) return st;
        }
    }
    return LIVEDLRM_KERNEL_OK;
}

/* One specialisation per (dtype, index width, weighted), so each is a constant inside. */
#define KERNEL_VARIANT(name, dtype, wide, weighted)                                                              \
    static int32_t KFN(name)(const uint8_t *t, int64_t rows, int64_t stride, int32_t dim, const void *ix,          \
                             const void *off, const float *wt, int32_t mean, int64_t b0, int64_t b1, int32_t pf,    \
                             float *o, int64_t *ep)                                                                 \
    { return KFN(bags)(dtype, wide, weighted, t, rows, stride, dim, ix, off, wt, mean, b0, b1, pf, o, ep); }
KERNEL_VARIANT(f32_i64, LIVEDLRM_KERNEL_FP32, 1, 0)
KERNEL_VARIANT(f32_i64_w, LIVEDLRM_KERNEL_FP32, 1, 1)
KERNEL_VARIANT(f32_i32, LIVEDLRM_KERNEL_FP32, 0, 0)
KERNEL_VARIANT(f32_i32_w, LIVEDLRM_KERNEL_FP32, 0, 1)
KERNEL_VARIANT(f16_i64, LIVEDLRM_KERNEL_FP16, 1, 0)
KERNEL_VARIANT(f16_i64_w, LIVEDLRM_KERNEL_FP16, 1, 1)
KERNEL_VARIANT(f16_i32, LIVEDLRM_KERNEL_FP16, 0, 0)
KERNEL_VARIANT(f16_i32_w, LIVEDLRM_KERNEL_FP16, 0, 1)
KERNEL_VARIANT(i8_i64, LIVEDLRM_KERNEL_INT8_ROWWISE, 1, 0)
KERNEL_VARIANT(i8_i64_w, LIVEDLRM_KERNEL_INT8_ROWWISE, 1, 1)
KERNEL_VARIANT(i8_i32, LIVEDLRM_KERNEL_INT8_ROWWISE, 0, 0)
KERNEL_VARIANT(i8_i32_w, LIVEDLRM_KERNEL_INT8_ROWWISE, 0, 1)
#undef KERNEL_VARIANT

/* The entry of this ISA (arguments already checked by bag_kernel.c). */
int32_t KFN(run)(int32_t dtype, int32_t index_bytes, const void *table, int64_t rows, int64_t stride, int32_t dim,
                 const void *indices, const void *offsets, const float *weights, int32_t mean,
                 int64_t b0, int64_t b1, int32_t pf, float *output, int64_t *ep)
{
    const uint8_t *t = (const uint8_t *)table;
    int wide = index_bytes == 8, weighted = weights != NULL;
#define CALL(name) return KFN(name)(t, rows, stride, dim, indices, offsets, weights, mean, b0, b1, pf, output, ep)
    switch (dtype) {
    case LIVEDLRM_KERNEL_FP32:
        if (wide) { if (weighted) CALL(f32_i64_w); CALL(f32_i64); }
        if (weighted) { CALL(f32_i32_w); }
        CALL(f32_i32);
    case LIVEDLRM_KERNEL_FP16:
        if (wide) { if (weighted) CALL(f16_i64_w); CALL(f16_i64); }
        if (weighted) { CALL(f16_i32_w); }
        CALL(f16_i32);
    default:
        if (wide) { if (weighted) CALL(i8_i64_w); CALL(i8_i64); }
        if (weighted) { CALL(i8_i32_w); }
        CALL(i8_i32);
    }
#undef CALL
}
