/* Self-test of the native reference: every compiled ISA equals the scalar path (fp32, fp16, int8-rowwise; odd
 * dims; empty bags; with and without prefetch), and a bad index is reported with its position. Exit code 0 = pass.
 * The C# tests (tests/LiveDlrm.Tests/Perf/NativeRefTests.cs) check the same library against EmbeddingBagReference. */
#include "embedding_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static size_t stride_of(int dtype, int dim) { return dtype == 0 ? (size_t)dim * 4 : dtype == 1 ? (size_t)dim * 2 : (size_t)dim + 8; }

static void fill(int dtype, uint8_t *t, int64_t rows, int dim)
{
    size_t stride = stride_of(dtype, dim);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = t + (size_t)r * stride;
        for (int c = 0; c < dim; c++) {
            if (dtype == 0) ((float *)row)[c] = (float)((int)(next() % 2001) - 1000) / 1000.0f;
            else if (dtype == 1) ((uint16_t *)row)[c] = (uint16_t)(0x3000 + next() % 0x1000) | (uint16_t)(next() & 1 ? 0x8000 : 0);
            else row[c] = (uint8_t)next();
        }
        if (dtype == 2) { float scale = 0.01f, bias = -0.5f; memcpy(row + dim, &scale, 4); memcpy(row + dim + 4, &bias, 4); }
    }
}

int main(void)
{
    static const int dims[] = {1, 3, 16, 17, 64, 100, 128, 130};
    const int64_t rows = 257, bags = 23;
    int best = livedlrm_ref_best_isa();
    printf("best isa %d\n", best);
    for (int dtype = 0; dtype <= 2; dtype++)
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            int dim = dims[d];
            uint8_t *table = malloc(stride_of(dtype, dim) * rows);
            fill(dtype, table, rows, dim);
            int64_t offsets[24], indices[23 * 9];
            int64_t n = 0;
            for (int64_t b = 0; b < bags; b++) {
                offsets[b] = n;
                int64_t len = b % 5 == 3 ? 0 : (int64_t)(next() % 9);   /* some empty bags */
                for (int64_t k = 0; k < len; k++) indices[n++] = (int64_t)(next() % rows);
            }
            offsets[bags] = n;
            float *expect = calloc((size_t)(bags * dim), 4), *got = calloc((size_t)(bags * dim), 4);
            int64_t pos;
            CHECK(livedlrm_ref_bag_sum(dtype, LIVEDLRM_REF_ISA_SCALAR, table, rows, dim, indices, offsets, 0, bags, 0, expect, &pos) == 0,
                  "scalar failed dtype %d dim %d", dtype, dim);
            for (int isa = LIVEDLRM_REF_ISA_AVX2; isa <= best; isa++)
                for (int pf = 0; pf <= 8; pf += 8) {
                    memset(got, 0xff, (size_t)(bags * dim) * 4);
                    /* two ranges, as two worker threads would call it */
                    int s1 = livedlrm_ref_bag_sum(dtype, isa, table, rows, dim, indices, offsets, 0, 11, pf, got, &pos);
                    int s2 = livedlrm_ref_bag_sum(dtype, isa, table, rows, dim, indices, offsets, 11, bags, pf, got, &pos);
                    CHECK(s1 == 0 && s2 == 0, "isa %d dtype %d dim %d: status %d %d", isa, dtype, dim, s1, s2);
                    for (int64_t i = 0; i < bags * dim; i++)
                        if (!(fabsf(got[i] - expect[i]) <= 1e-4f * (1.0f + fabsf(expect[i])))) {
                            CHECK(0, "isa %d dtype %d dim %d pf %d: [%lld] %g != %g", isa, dtype, dim, pf, (long long)i, got[i], expect[i]);
                            break;
                        }
                }
            /* a bad index (negative, then == rows) is reported with its position, for every ISA */
            for (int isa = LIVEDLRM_REF_ISA_SCALAR; isa <= best; isa++) {
                int64_t bad = offsets[bags] > 4 ? 4 : 0;
                if (offsets[bags] == 0) break;
                int64_t saved = indices[bad];
                indices[bad] = (isa & 1) ? -1 : rows;
                int st = livedlrm_ref_bag_sum(dtype, isa, table, rows, dim, indices, offsets, 0, bags, 4, got, &pos);
                CHECK(st == LIVEDLRM_REF_BAD_INDEX && pos == bad, "isa %d dtype %d dim %d: bad index gave status %d pos %lld", isa, dtype, dim, st, (long long)pos);
                indices[bad] = saved;
            }
            free(table); free(expect); free(got);
        }
    /* argument errors */
    float out[4];
    int64_t pos, idx[1] = {0}, off[2] = {0, 1}, dec[2] = {1, 0};
    float t[4] = {0};
    CHECK(livedlrm_ref_bag_sum(0, 0, NULL, 1, 4, idx, off, 0, 1, 0, out, &pos) == LIVEDLRM_REF_BAD_ARGUMENT, "null table accepted");
    CHECK(livedlrm_ref_bag_sum(7, 0, t, 1, 4, idx, off, 0, 1, 0, out, &pos) == LIVEDLRM_REF_BAD_ARGUMENT, "bad dtype accepted");
    CHECK(livedlrm_ref_bag_sum(0, 0, t, 1, 4, idx, off, 0, 1, -1, out, &pos) == LIVEDLRM_REF_BAD_ARGUMENT, "negative prefetch accepted");
    CHECK(livedlrm_ref_bag_sum(0, 9, t, 1, 4, idx, off, 0, 1, 0, out, &pos) == LIVEDLRM_REF_BAD_ARGUMENT, "bad isa accepted");
    CHECK(livedlrm_ref_bag_sum(0, 0, t, 1, 4, idx, dec, 0, 1, 0, out, &pos) == LIVEDLRM_REF_BAD_OFFSETS && pos == 1, "decreasing offsets accepted");
    printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
