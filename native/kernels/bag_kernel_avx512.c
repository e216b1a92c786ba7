/* The AVX-512 (F + BW + VL) instance of bag_kernel_body.h: 4 zmm a 64-float block, masked loads and stores for a
 * partial block (nothing read or written past a row's or an output row's end), vcvtph2ps for fp16 rows.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c; only called after cpuid says so. */
#include <immintrin.h>
#include <stdint.h>

#define VEC __m512
#define LANES 16
#define NVEC 4
#define KFN(name) livedlrm_kernel_avx512_##name

static inline __attribute__((always_inline)) __mmask16 lanes_mask(int32_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

#define v_zero() _mm512_setzero_ps()
#define v_set1(x) _mm512_set1_ps(x)
#define v_add(a, b) _mm512_add_ps(a, b)
#define v_mul(a, b) _mm512_mul_ps(a, b)
#define v_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define v_load_f32(p, n) ((n) >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes_mask(n), p))
#define v_load_f16(p, n) _mm512_cvtph_ps((n) >= 16 ? _mm256_loadu_si256((const __m256i *)(p)) : _mm256_maskz_loadu_epi16(lanes_mask(n), p))
#define v_load_u8(p, n) _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32((n) >= 16 ? _mm_loadu_si128((const __m128i *)(p)) : _mm_maskz_loadu_epi8(lanes_mask(n), p)))
#define v_store(p, v, n) ((n) >= 16 ? _mm512_storeu_ps(p, v) : _mm512_mask_storeu_ps(p, lanes_mask(n), v))

int32_t livedlrm_kernel_avx512_run(int32_t dtype, int32_t index_bytes, const void *table, int64_t rows, int64_t stride,
                                   int32_t dim, const void *indices, const void *offsets, const float *weights,
                                   int32_t mean, int64_t b0, int64_t b1, int32_t pf, float *output, int64_t *ep);

#include "bag_kernel_body.h"
