/* The AVX2 (+ FMA + F16C) instance of bag_kernel_body.h: 8 ymm a 64-float block, vcvtph2ps for fp16 rows. AVX2 has
 * no masked 8/16-bit loads, so the last vector of a partial block goes through a zeroed buffer (never reading past the
 * row's end). Compiled with -mavx2 -mfma -mf16c; only called after cpuid says so. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define VEC __m256
#define LANES 8
#define NVEC 8
#define KFN(name) livedlrm_kernel_avx2_##name

static inline __attribute__((always_inline)) __m256 load_f32_part(const float *p, int32_t n)
{ float t[8] = {0}; memcpy(t, p, (size_t)n * 4); return _mm256_loadu_ps(t); }
static inline __attribute__((always_inline)) __m256 load_f16_part(const uint16_t *p, int32_t n)
{ uint16_t t[8] = {0}; memcpy(t, p, (size_t)n * 2); return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)t)); }
static inline __attribute__((always_inline)) __m256 load_u8_part(const uint8_t *p, int32_t n)
{ uint8_t t[8] = {0}; memcpy(t, p, (size_t)n); return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)t))); }
static inline __attribute__((always_inline)) void store_part(float *p, __m256 v, int32_t n)
{ float t[8]; _mm256_storeu_ps(t, v); memcpy(p, t, (size_t)n * 4); }

#define v_zero() _mm256_setzero_ps()
#define v_set1(x) _mm256_set1_ps(x)
#define v_add(a, b) _mm256_add_ps(a, b)
#define v_mul(a, b) _mm256_mul_ps(a, b)
#define v_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define v_load_f32(p, n) ((n) >= 8 ? _mm256_loadu_ps(p) : load_f32_part(p, n))
#define v_load_f16(p, n) ((n) >= 8 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p))) : load_f16_part(p, n))
#define v_load_u8(p, n) ((n) >= 8 ? _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))) : load_u8_part(p, n))
#define v_store(p, v, n) ((n) >= 8 ? _mm256_storeu_ps(p, v) : store_part(p, v, n))

int32_t livedlrm_kernel_avx2_run(int32_t dtype, int32_t index_bytes, const void *table, int64_t rows, int64_t stride,
                                 int32_t dim, const void *indices, const void *offsets, const float *weights,
                                 int32_t mean, int64_t b0, int64_t b1, int32_t pf, float *output, int64_t *ep);

#include "bag_kernel_body.h"
