/* The native reference gather (see embedding_ref.h for the contract).
 *
 * Shape of every kernel, after FBGEMM's: the output row of a bag lives in vector registers while the bag's rows are
 * added (a column block of 64 floats = 4 zmm or 8 ymm; wider rows loop over the bag once per block), one unsigned
 * compare per index, and while adding indices[j] every cache line of row indices[j + prefetch] is prefetched.
 * Built -O3 -march=native: the AVX-512 path exists only where the compiler and CPU have F+BW+VL, the AVX2 path
 * only with AVX2+FMA+F16C; the scalar path always. */
#include "embedding_ref.h"

#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LIVEDLRM_HAVE_AVX512 1
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LIVEDLRM_HAVE_AVX2 1
#endif
#if defined(LIVEDLRM_HAVE_AVX512) || defined(LIVEDLRM_HAVE_AVX2)
#include <immintrin.h>
#endif

#define INLINE static inline __attribute__((always_inline))
#define BLOCK 64 /* floats per column block */

/* Which row to prefetch while adding indices[j]: none past the end of the caller's range, none that is out of
 * bounds (it is reported when its turn comes, and prefetching it would compute a wild address). */
INLINE void prefetch_row(const uint8_t *table, int64_t rows, size_t stride, const int64_t *indices,
                         int64_t j, int32_t distance, int64_t range_end)
{
    if (distance <= 0 || j + distance >= range_end) return;
    int64_t r = indices[j + distance];
    if ((uint64_t)r >= (uint64_t)rows) return;
    uintptr_t first = (uintptr_t)(table + (size_t)r * stride) & ~(uintptr_t)63;
    uintptr_t last = (uintptr_t)(table + (size_t)r * stride + stride - 1) & ~(uintptr_t)63;
    for (uintptr_t p = first; p <= last; p += 64) __builtin_prefetch((const void *)p, 0, 3);
}

INLINE float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { mant <<= 1; e++; } while (!(mant & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

INLINE float row_scale(const uint8_t *row, int32_t dim) { float v; memcpy(&v, row + dim, 4); return v; }
INLINE float row_bias(const uint8_t *row, int32_t dim) { float v; memcpy(&v, row + dim + 4, 4); return v; }

/* ------------------------------------------------------------------------------------------------ scalar */

static int32_t bags_scalar(int32_t dtype, const uint8_t *table, int64_t rows, int32_t dim, size_t stride,
                           const int64_t *indices, const int64_t *offsets, int64_t b0, int64_t b1,
                           int32_t pf, float *output, int64_t *error_position)
{
    const int64_t range_end = offsets[b1];
    float acc[BLOCK];
    for (int64_t b = b0; b < b1; b++) {
        for (int32_t c = 0; c < dim; c += BLOCK) {
            int32_t w = dim - c < BLOCK ? dim - c : BLOCK;
            memset(acc, 0, sizeof acc);
            for (int64_t j = offsets[b]; j < offsets[b + 1]; j++) {
                int64_t r = indices[j];
                if ((uint64_t)r >= (uint64_t)rows) { *error_position = j; return LIVEDLRM_REF_BAD_INDEX; }
                if (c == 0) prefetch_row(table, rows, stride, indices, j, pf, range_end);
                const uint8_t *row = table + (size_t)r * stride;
                if (dtype == LIVEDLRM_REF_FP32)
                    for (int32_t k = 0; k < w; k++) acc[k] += ((const float *)row)[c + k];
                else if (dtype == LIVEDLRM_REF_FP16)
                    for (int32_t k = 0; k < w; k++) acc[k] += half_to_float(((const uint16_t *)row)[c + k]);
                else {
                    float scale = row_scale(row, dim), bias = row_bias(row, dim);
                    for (int32_t k = 0; k < w; k++) acc[k] += row[c + k] * scale + bias;
                }
            }
            memcpy(output + b * dim + c, acc, (size_t)w * sizeof(float));
        }
    }
    return LIVEDLRM_REF_OK;
}

/* ------------------------------------------------------------------------------------------------ AVX-512 */
#ifdef LIVEDLRM_HAVE_AVX512

INLINE __mmask16 mask16(int32_t lanes) { return lanes >= 16 ? (__mmask16)0xffff : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1); }

/* 16 values of a row from column c, widened to fp32 (int8: the raw q values; scale and bias applied by the caller). */
INLINE __m512 load16_512(int32_t dtype, const uint8_t *row, int32_t c, __mmask16 m, int full)
{
    if (dtype == LIVEDLRM_REF_FP32)
        return full ? _mm512_loadu_ps((const float *)row + c) : _mm512_maskz_loadu_ps(m, (const float *)row + c);
    if (dtype == LIVEDLRM_REF_FP16)
        return _mm512_cvtph_ps(full ? _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c))
                                    : _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c));
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(full ? _mm_loadu_si128((const __m128i *)(row + c))
                                                        : _mm_maskz_loadu_epi8(m, row + c)));
}

/* One bag, one column block of up to 64 floats. `full` (w == 64) is a constant at each call site, so the
 * unmasked and masked variants are separate loops. */
INLINE int32_t block_512(int32_t dtype, int full, const uint8_t *table, int64_t rows, int32_t dim, size_t stride,
                         const int64_t *indices, int64_t s, int64_t e, int32_t c, int32_t w,
                         int32_t pf, int64_t range_end, float *out, int64_t *error_position)
{
    const __mmask16 m0 = mask16(w), m1 = mask16(w - 16), m2 = mask16(w - 32), m3 = mask16(w - 48);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    float bias_sum = 0.0f;
    for (int64_t j = s; j < e; j++) {
        int64_t r = indices[j];
        if ((uint64_t)r >= (uint64_t)rows) { *error_position = j; return LIVEDLRM_REF_BAD_INDEX; }
        if (c == 0) prefetch_row(table, rows, stride, indices, j, pf, range_end);
        const uint8_t *row = table + (size_t)r * stride;
        __m512 v0 = load16_512(dtype, row, c, m0, full), v1 = load16_512(dtype, row, c + 16, m1, full),
               v2 = load16_512(dtype, row, c + 32, m2, full), v3 = load16_512(dtype, row, c + 48, m3, full);
        if (dtype == LIVEDLRM_REF_INT8_ROWWISE) {
            /* sum(q*scale + bias) = sum(q*scale) + sum(bias): one fma per vector, the bias once per row */
            __m512 scale = _mm512_set1_ps(row_scale(row, dim));
            bias_sum += row_bias(row, dim);
            a0 = _mm512_fmadd_ps(v0, scale, a0); a1 = _mm512_fmadd_ps(v1, scale, a1);
            a2 = _mm512_fmadd_ps(v2, scale, a2); a3 = _mm512_fmadd_ps(v3, scale, a3);
        } else {
            a0 = _mm512_add_ps(a0, v0); a1 = _mm512_add_ps(a1, v1);
            a2 = _mm512_add_ps(a2, v2); a3 = _mm512_add_ps(a3, v3);
        }
    }
    if (dtype == LIVEDLRM_REF_INT8_ROWWISE) {
        __m512 bias = _mm512_set1_ps(bias_sum);
        a0 = _mm512_add_ps(a0, bias); a1 = _mm512_add_ps(a1, bias); a2 = _mm512_add_ps(a2, bias); a3 = _mm512_add_ps(a3, bias);
    }
    if (full) {
        _mm512_storeu_ps(out + c, a0); _mm512_storeu_ps(out + c + 16, a1);
        _mm512_storeu_ps(out + c + 32, a2); _mm512_storeu_ps(out + c + 48, a3);
    } else {
        _mm512_mask_storeu_ps(out + c, m0, a0); _mm512_mask_storeu_ps(out + c + 16, m1, a1);
        _mm512_mask_storeu_ps(out + c + 32, m2, a2); _mm512_mask_storeu_ps(out + c + 48, m3, a3);
    }
    return LIVEDLRM_REF_OK;
}

INLINE int32_t bags_512(int32_t dtype, const uint8_t *table, int64_t rows, int32_t dim, size_t stride,
                        const int64_t *indices, const int64_t *offsets, int64_t b0, int64_t b1,
                        int32_t pf, float *output, int64_t *error_position)
{
    const int64_t range_end = offsets[b1];
    for (int64_t b = b0; b < b1; b++) {
        float *out = output + b * dim;
        for (int32_t c = 0; c < dim; c += BLOCK) {
            int32_t w = dim - c < BLOCK ? dim - c : BLOCK;
            int32_t st = w == BLOCK
                ? block_512(dtype, 1, table, rows, dim, stride, indices, offsets[b], offsets[b + 1], c, w, pf, range_end, out, error_position)
                : block_512(dtype, 0, table, rows, dim, stride, indices, offsets[b], offsets[b + 1], c, w, pf, range_end, out, error_position);
            if (st != LIVEDLRM_REF_OK) return st;
        }
    }
    return LIVEDLRM_REF_OK;
}

/* One specialisation per dtype, so dtype is a constant inside each. */
static int32_t bags_512_f32(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                            int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_512(LIVEDLRM_REF_FP32, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
static int32_t bags_512_f16(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                            int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_512(LIVEDLRM_REF_FP16, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
static int32_t bags_512_i8(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                           int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_512(LIVEDLRM_REF_INT8_ROWWISE, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
#endif

/* ------------------------------------------------------------------------------------------------ AVX2 */
#ifdef LIVEDLRM_HAVE_AVX2

/* 8 values of a row from column c widened to fp32; `lanes` < 8 only on the last vector of an odd-width row
 * (copied through a zeroed buffer: AVX2 has no masked 8/16-bit loads, and it never reads past the row). */
INLINE __m256 load8_256(int32_t dtype, const uint8_t *row, int32_t c, int32_t lanes)
{
    if (lanes >= 8) {
        if (dtype == LIVEDLRM_REF_FP32) return _mm256_loadu_ps((const float *)row + c);
        if (dtype == LIVEDLRM_REF_FP16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + c)));
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + c))));
    }
    if (lanes <= 0) return _mm256_setzero_ps();
    if (dtype == LIVEDLRM_REF_FP32) {
        float tmp[8] = {0};
        memcpy(tmp, (const float *)row + c, (size_t)lanes * 4);
        return _mm256_loadu_ps(tmp);
    }
    if (dtype == LIVEDLRM_REF_FP16) {
        uint16_t tmp[8] = {0};
        memcpy(tmp, (const uint16_t *)row + c, (size_t)lanes * 2);
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp));
    }
    uint8_t tmp[8] = {0};
    memcpy(tmp, row + c, (size_t)lanes);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)tmp)));
}

INLINE int32_t block_256(int32_t dtype, int full, const uint8_t *table, int64_t rows, int32_t dim, size_t stride,
                         const int64_t *indices, int64_t s, int64_t e, int32_t c, int32_t w,
                         int32_t pf, int64_t range_end, float *out, int64_t *error_position)
{
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    float bias_sum = 0.0f;
    for (int64_t j = s; j < e; j++) {
        int64_t r = indices[j];
        if ((uint64_t)r >= (uint64_t)rows) { *error_position = j; return LIVEDLRM_REF_BAD_INDEX; }
        if (c == 0) prefetch_row(table, rows, stride, indices, j, pf, range_end);
        const uint8_t *row = table + (size_t)r * stride;
        __m256 scale = _mm256_setzero_ps();
        if (dtype == LIVEDLRM_REF_INT8_ROWWISE) { scale = _mm256_set1_ps(row_scale(row, dim)); bias_sum += row_bias(row, dim); }
        for (int k = 0; k < 8; k++) {   /* constant trip count: unrolled, a[] stays in ymm registers */
            __m256 v = load8_256(dtype, row, c + 8 * k, full ? 8 : w - 8 * k);
            a[k] = dtype == LIVEDLRM_REF_INT8_ROWWISE ? _mm256_fmadd_ps(v, scale, a[k]) : _mm256_add_ps(a[k], v);
        }
    }
    float tmp[BLOCK];
    __m256 bias = _mm256_set1_ps(bias_sum);
    for (int k = 0; k < 8; k++) {
        __m256 v = dtype == LIVEDLRM_REF_INT8_ROWWISE ? _mm256_add_ps(a[k], bias) : a[k];
        if (full) _mm256_storeu_ps(out + c + 8 * k, v);
        else _mm256_storeu_ps(tmp + 8 * k, v);
    }
    if (!full) memcpy(out + c, tmp, (size_t)w * sizeof(float));
    return LIVEDLRM_REF_OK;
}

INLINE int32_t bags_256(int32_t dtype, const uint8_t *table, int64_t rows, int32_t dim, size_t stride,
                        const int64_t *indices, const int64_t *offsets, int64_t b0, int64_t b1,
                        int32_t pf, float *output, int64_t *error_position)
{
    const int64_t range_end = offsets[b1];
    for (int64_t b = b0; b < b1; b++) {
        float *out = output + b * dim;
        for (int32_t c = 0; c < dim; c += BLOCK) {
            int32_t w = dim - c < BLOCK ? dim - c : BLOCK;
            int32_t st = w == BLOCK
                ? block_256(dtype, 1, table, rows, dim, stride, indices, offsets[b], offsets[b + 1], c, w, pf, range_end, out, error_position)
                : block_256(dtype, 0, table, rows, dim, stride, indices, offsets[b], offsets[b + 1], c, w, pf, range_end, out, error_position);
            if (st != LIVEDLRM_REF_OK) return st;
        }
    }
    return LIVEDLRM_REF_OK;
}

static int32_t bags_256_f32(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                            int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_256(LIVEDLRM_REF_FP32, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
static int32_t bags_256_f16(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                            int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_256(LIVEDLRM_REF_FP16, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
static int32_t bags_256_i8(const uint8_t *t, int64_t rows, int32_t dim, size_t stride, const int64_t *ix, const int64_t *off,
                           int64_t b0, int64_t b1, int32_t pf, float *o, int64_t *ep)
{ return bags_256(LIVEDLRM_REF_INT8_ROWWISE, t, rows, dim, stride, ix, off, b0, b1, pf, o, ep); }
#endif

/* ------------------------------------------------------------------------------------------------ entry */

int32_t livedlrm_ref_best_isa(void)
{
#if defined(LIVEDLRM_HAVE_AVX512)
    return LIVEDLRM_REF_ISA_AVX512;
#elif defined(LIVEDLRM_HAVE_AVX2)
    return LIVEDLRM_REF_ISA_AVX2;
#else
    return LIVEDLRM_REF_ISA_SCALAR;
#endif
}

int32_t livedlrm_ref_bag_sum(int32_t dtype, int32_t isa,
                             const void *table, int64_t rows, int32_t dim,
                             const int64_t *indices, const int64_t *offsets,
                             int64_t bag_begin, int64_t bag_end,
                             int32_t prefetch_distance,
                             float *output, int64_t *error_position)
{
    if (error_position == NULL) return LIVEDLRM_REF_BAD_ARGUMENT;
    *error_position = -1;
    if (table == NULL || indices == NULL || offsets == NULL || output == NULL || rows <= 0 || dim <= 0 ||
        bag_begin < 0 || bag_end < bag_begin || prefetch_distance < 0)
        return LIVEDLRM_REF_BAD_ARGUMENT;
    size_t stride;
    switch (dtype) {
    case LIVEDLRM_REF_FP32: stride = (size_t)dim * 4; break;
    case LIVEDLRM_REF_FP16: stride = (size_t)dim * 2; break;
    case LIVEDLRM_REF_INT8_ROWWISE: stride = (size_t)dim + 8; break;
    default: return LIVEDLRM_REF_BAD_ARGUMENT;
    }
    if (offsets[bag_begin] < 0) { *error_position = bag_begin; return LIVEDLRM_REF_BAD_OFFSETS; }
    for (int64_t b = bag_begin; b < bag_end; b++)
        if (offsets[b + 1] < offsets[b]) { *error_position = b + 1; return LIVEDLRM_REF_BAD_OFFSETS; }
    if (isa == LIVEDLRM_REF_ISA_BEST) isa = livedlrm_ref_best_isa();

    const uint8_t *t = (const uint8_t *)table;
    switch (isa) {
    case LIVEDLRM_REF_ISA_SCALAR:
        return bags_scalar(dtype, t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
#ifdef LIVEDLRM_HAVE_AVX2
    case LIVEDLRM_REF_ISA_AVX2:
        switch (dtype) {
        case LIVEDLRM_REF_FP32: return bags_256_f32(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        case LIVEDLRM_REF_FP16: return bags_256_f16(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        default: return bags_256_i8(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        }
#endif
#ifdef LIVEDLRM_HAVE_AVX512
    case LIVEDLRM_REF_ISA_AVX512:
        switch (dtype) {
        case LIVEDLRM_REF_FP32: return bags_512_f32(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        case LIVEDLRM_REF_FP16: return bags_512_f16(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        default: return bags_512_i8(t, rows, dim, stride, indices, offsets, bag_begin, bag_end, prefetch_distance, output, error_position);
        }
#endif
    default:
        return isa >= LIVEDLRM_REF_ISA_SCALAR && isa <= LIVEDLRM_REF_ISA_AVX512 ? LIVEDLRM_REF_UNSUPPORTED : LIVEDLRM_REF_BAD_ARGUMENT;
    }
}
