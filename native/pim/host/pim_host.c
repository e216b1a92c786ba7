/* liblivedlrm_pim: the small stable C ABI the C# engine calls (interop/LiveDlrm.Interop/Pim.cs), written once over
 * the UPMEM host API and compiled unchanged against the SDK (<dpu.h> of SDK 2025.1: hardware or its simulator) or
 * the project's emulation (native/pim/emu), which implements the same types and calls. The only build-dependent
 * values come from the build as plain constants (PIM_BUILD_KIND, PIM_MAX_DPUS).
 *
 * One context = one DPU set holding up to PIM_MAX_TABLES tables; a lookup over several tables is one push, one
 * launch and one pull. Transfers follow the hardware: per-DPU buffers padded to 8 bytes and to one common length;
 * the index lists were grouped per DPU by the caller; the partial sums are reduced here, DPU by DPU in index order
 * (a fixed summation order; int32 tables sum exactly in int64). Row updates travel as one push of update records
 * per round and are applied by the kernel.
 *
 * Every function returns 0 or a negative pim_status; the reason is in pim_last_error() (per thread). Inputs are
 * validated completely before the first transfer, so a rejected call changes nothing on the DPUs. A context is
 * not thread-safe (the C# owner serialises calls).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dpu.h>

#include "pim_common.h"

#ifndef PIM_BUILD_KIND
#define PIM_BUILD_KIND 1          /* 0: linked with the emulation, 1: with the UPMEM SDK (set by CMake) */
#endif
#ifndef PIM_MAX_DPUS
#define PIM_MAX_DPUS UINT32_MAX   /* most DPUs per context in this build (the emulation's limit, set by CMake) */
#endif

#define PIM_API __attribute__((visibility("default")))

enum pim_status {
    PIM_OK = 0,
    PIM_E_ARGUMENT = -1,     /* bad input from the caller */
    PIM_E_DPU = -2,          /* the UPMEM runtime (or the emulation) reported an error */
    PIM_E_STATE = -3,        /* no table loaded, or a failed load left the context without one */
    PIM_E_MEMORY = -4,
    PIM_E_CAPACITY = -5,     /* does not fit MRAM / WRAM */
    PIM_E_RANGE = -6,        /* an int32 table's new values exceed its scale: reload the table */
};

struct pim_table {
    int loaded;
    int has_region;
    uint64_t rows;
    uint32_t dim, slice_floats, slot_bytes, nr_tiles, nr_cache, format;
    double scale;            /* int32 tables: value = q * scale */
    uint32_t slot_base, slot_capacity;     /* MRAM region in pim_table (bytes, same on every DPU) */
    uint32_t cache_base, cache_capacity;   /* WRAM region in pim_cache */
    uint32_t *nr_slots;      /* per DPU */
};

struct pim_ctx {
    struct dpu_set_t set;
    int allocated;           /* a zeroed dpu_set_t looks like a rank set: keep our own flag */
    struct dpu_set_t *dpus;  /* one handle per DPU, index order */
    uint32_t nr_dpus;
    pim_backend backend;
    struct pim_table tables[PIM_MAX_TABLES];
    uint32_t mram_used, cache_used;        /* high-water marks of the regions */
    uint8_t *stage;          /* nr_dpus * stage_each */
    size_t stage_each;
    uint64_t *seg_map;       /* lookup: (batch << 32 | host segment) of every DPU segment, DPU order */
    size_t seg_map_cap;
    int64_t *iacc;           /* lookup: int64 sums of the int32 tables */
    size_t iacc_cap;
    pim_stats_t stats;
};

static __thread char last_error[2048];

PIM_API const char *pim_last_error(void) { return last_error; }

static int set_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

/* The logs of the DPUs in fault (on hardware: their printf buffers; on the emulation: the fault's diagnosis),
 * appended to text. */
static void append_fault_logs(struct dpu_set_t set, char *text, size_t cap)
{
    struct dpu_set_t dpu;
    uint32_t i, shown = 0;
    DPU_FOREACH(set, dpu, i) {
        bool done = false, fault = false;
        if (dpu_status(dpu, &done, &fault) != DPU_OK || !fault) continue;
        char *log = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&log, &size);
        if (!f) return;
        dpu_error_t err = dpu_log_read(dpu, f);
        fclose(f);
        size_t used = strlen(text);
        if (err == DPU_OK && size) {
            while (size && (log[size - 1] == '\n')) log[--size] = 0;
            snprintf(text + used, cap - used, "; DPU %u log: %s", i, log);
        } else
            snprintf(text + used, cap - used, "; DPU %u in fault (no log)", i);
        free(log);
        if (++shown == 2) break;
    }
}

static int dpu_failure_on(struct dpu_set_t set, dpu_error_t err, const char *what)
{
    char *text = dpu_error_to_string(err);   /* allocated by SDK 2025.1 and the emulation */
    set_error(PIM_E_DPU, "%s: %s (error %d)", what, text ? text : "?", (int)err);
    free(text);
    if (err == DPU_ERR_DPU_FAULT) append_fault_logs(set, last_error, sizeof last_error);
    return PIM_E_DPU;
}

#define PIM_TRY(ctx, call, what)                                                                         \
    do {                                                                                                 \
        dpu_error_t pim_err_ = (call);                                                                   \
        if (pim_err_ != DPU_OK) { rc = dpu_failure_on((ctx)->set, pim_err_, what); goto done; }          \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }

static int ensure_stage(struct pim_ctx *ctx, size_t each)
{
    each = round8(each);
    if (each <= ctx->stage_each) return PIM_OK;
    uint8_t *p = realloc(ctx->stage, each * ctx->nr_dpus);
    if (!p) return set_error(PIM_E_MEMORY, "cannot allocate %zu bytes of transfer staging", each * ctx->nr_dpus);
    ctx->stage = p;
    ctx->stage_each = each;
    return PIM_OK;
}

/* One parallel transfer of every DPU's staging buffer (length bytes each). A failure between prepare and push
 * clears what was prepared, so the next transfer does not meet DPU_ERR_TRANSFER_ALREADY_SET. */
static int push_stage(struct pim_ctx *ctx, dpu_xfer_t xfer, const char *symbol, uint32_t offset, size_t length, const char *what)
{
    int rc = PIM_OK;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        dpu_error_t err = dpu_prepare_xfer(ctx->dpus[d], ctx->stage + d * ctx->stage_each);
        if (err != DPU_OK) { rc = dpu_failure_on(ctx->set, err, what); goto clear; }
    }
    dpu_error_t err = dpu_push_xfer(ctx->set, xfer, symbol, offset, length, DPU_XFER_DEFAULT);
    if (err == DPU_OK) return PIM_OK;
    rc = dpu_failure_on(ctx->set, err, what);
clear:
    dpu_prepare_xfer(ctx->set, NULL);
    return rc;
}

/* Directory of this library, for the default kernel path. */
static void library_dir(char *out, size_t cap)
{
    Dl_info info;
    out[0] = 0;
    if (dladdr((void *)&pim_last_error, &info) && info.dli_fname) {
        snprintf(out, cap, "%s", info.dli_fname);
        char *slash = strrchr(out, '/');
        if (slash) *slash = 0;
        else snprintf(out, cap, ".");
    }
}

/* ----------------------------------------------------------------------------------------------- layout */

/* Sizes and offsets of the shared structs and the layout constants, in a fixed order the C# mirror checks. */
PIM_API int pim_struct_layout(int64_t *values, int32_t capacity)
{
#define PUT(v) do { if (n < capacity) values[n] = (int64_t)(v); n++; } while (0)
    int32_t n = 0;
    PUT(sizeof(pim_table_args)); PUT(offsetof(pim_table_args, slot_base)); PUT(offsetof(pim_table_args, format));
    PUT(sizeof(pim_batch_header)); PUT(offsetof(pim_batch_header, items_offset));
    PUT(sizeof(pim_segment)); PUT(offsetof(pim_segment, table)); PUT(offsetof(pim_segment, out_offset));
    PUT(sizeof(pim_update));
    PUT(sizeof(pim_host_segment)); PUT(offsetof(pim_host_segment, tile)); PUT(offsetof(pim_host_segment, item_begin));
    PUT(offsetof(pim_host_segment, item_count));
    PUT(sizeof(pim_table_batch)); PUT(offsetof(pim_table_batch, segs)); PUT(offsetof(pim_table_batch, weights));
    PUT(offsetof(pim_table_batch, output)); PUT(offsetof(pim_table_batch, output_floats));
    PUT(sizeof(pim_slot_desc)); PUT(offsetof(pim_slot_desc, row_b)); PUT(offsetof(pim_slot_desc, tile));
    PUT(offsetof(pim_slot_desc, dpu)); PUT(offsetof(pim_slot_desc, slot));
    PUT(sizeof(pim_stats_t)); PUT(offsetof(pim_stats_t, items)); PUT(offsetof(pim_stats_t, ns_host_reduce));
    PUT(offsetof(pim_stats_t, ns_update)); PUT(offsetof(pim_stats_t, nr_dpus)); PUT(offsetof(pim_stats_t, backend));
    PUT(sizeof(pim_probe_args)); PUT(offsetof(pim_probe_args, wram_offset));
    PUT(PIM_MRAM_TABLE_BYTES); PUT(PIM_MRAM_IN_BYTES); PUT(PIM_MRAM_OUT_BYTES); PUT(PIM_MAX_SLICE_FLOATS);
    PUT(PIM_WRAM_CACHE_BYTES); PUT(PIM_ITEM_CACHE_BIT); PUT(PIM_MAX_TABLES); PUT(PIM_INT_BITS); PUT(PIM_INT_SEGMENT_ITEMS);
#undef PUT
    return n;
}

/* 0: built against the emulation, 1: built against the UPMEM SDK. */
PIM_API int pim_build_kind(void) { return PIM_BUILD_KIND; }

/* Most DPUs one context may hold in this build: the emulation's limit; with the SDK, UINT32_MAX (no limit of
 * ours; dpu_alloc reports what the machine lacks). */
PIM_API uint32_t pim_max_dpus(void) { return PIM_MAX_DPUS; }

/* ------------------------------------------------------------------------------------------ open / close */

PIM_API void pim_close(struct pim_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->allocated) dpu_free(ctx->set);
    for (uint32_t t = 0; t < PIM_MAX_TABLES; t++) free(ctx->tables[t].nr_slots);
    free(ctx->dpus);
    free(ctx->stage);
    free(ctx->seg_map);
    free(ctx->iacc);
    free(ctx);
}

/* Allocates nr_dpus DPUs with the UPMEM profile string (e.g. "" or "backend=simulator"; the emulated build
 * accepts "", "backend=emulated", "emuChip=v1A|v1B", "emuYield=SEED") and loads the embedding kernel
 * (kernel_path NULL: the one next to this library). */
PIM_API int pim_open(uint32_t nr_dpus, const char *profile, const char *kernel_path, struct pim_ctx **out)
{
    if (!out) return set_error(PIM_E_ARGUMENT, "pim_open: null output pointer");
    *out = NULL;
    if (nr_dpus == 0) return set_error(PIM_E_ARGUMENT, "pim_open: nr_dpus must be at least 1");
    char path[PATH_MAX];
    if (kernel_path && *kernel_path) snprintf(path, sizeof path, "%s", kernel_path);
    else {
        char dir[PATH_MAX - 64];
        library_dir(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/%s", dir, PIM_KERNEL_FILE);
    }
    if (access(path, R_OK) != 0)
        return set_error(PIM_E_ARGUMENT, "DPU kernel binary '%s' not found or not readable (built by native/pim; "
                         "on a UPMEM server the SDK build compiles it with dpu-upmem-dpurte-clang)", path);

    struct pim_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return set_error(PIM_E_MEMORY, "pim_open: out of memory");
    int rc = PIM_OK;
    ctx->backend = PIM_BUILD_KIND == 0 ? PIM_BACKEND_EMULATED
                 : profile && strstr(profile, "backend=simulator") ? PIM_BACKEND_SIMULATOR : PIM_BACKEND_HW;
    PIM_TRY(ctx, dpu_alloc(nr_dpus, profile && *profile ? profile : NULL, &ctx->set), "dpu_alloc");
    ctx->allocated = 1;
    uint32_t got = 0;
    PIM_TRY(ctx, dpu_get_nr_dpus(ctx->set, &got), "dpu_get_nr_dpus");
    if (got != nr_dpus) { rc = set_error(PIM_E_CAPACITY, "asked for %u DPUs, the runtime gave %u", nr_dpus, got); goto done; }
    PIM_TRY(ctx, dpu_load(ctx->set, path, NULL), "dpu_load");
    ctx->nr_dpus = nr_dpus;
    ctx->dpus = calloc(nr_dpus, sizeof *ctx->dpus);
    if (!ctx->dpus) { rc = set_error(PIM_E_MEMORY, "pim_open: out of memory"); goto done; }
    struct dpu_set_t dpu;
    uint32_t i;
    DPU_FOREACH(ctx->set, dpu, i) ctx->dpus[i] = dpu;
    ctx->stats.nr_dpus = nr_dpus;
    ctx->stats.backend = ctx->backend;
done:
    if (rc != PIM_OK) { pim_close(ctx); return rc; }
    *out = ctx;
    return PIM_OK;
}

/* ------------------------------------------------------------------------------------------ tables */

static int check_slot(const struct pim_table *t, uint64_t rows, const pim_slot_desc *s, const char *what, uint64_t i)
{
    if (s->row_a < 0 || (uint64_t)s->row_a >= rows)
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: row %lld outside [0, %llu)", what, (unsigned long long)i, (long long)s->row_a, (unsigned long long)rows);
    if (s->row_b != -1 && (s->row_b < 0 || (uint64_t)s->row_b >= rows))
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: pair row %lld outside [0, %llu)", what, (unsigned long long)i, (long long)s->row_b, (unsigned long long)rows);
    if (s->tile >= t->nr_tiles)
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: column tile %u, the table has %u", what, (unsigned long long)i, s->tile, t->nr_tiles);
    return PIM_OK;
}

/* Fixed-point value of x in an int32 table; false when it does not fit the table's range. */
static bool quantize(const struct pim_table *t, float x, int32_t *q)
{
    double v = nearbyint((double)x / t->scale);
    if (!(fabs(v) <= (double)(1u << PIM_INT_BITS))) return false;   /* also NaN */
    *q = (int32_t)v;
    return true;
}

/* The stored vector of a slot: row_a (+ row_b) restricted to its column tile, zero past dim; fp32, or the sum of
 * the rows' fixed-point values (so a pair slot adds exactly what its two rows would). False: out of range. */
static bool fill_vector(const struct pim_table *t, const float *table, uint64_t row_stride, const pim_slot_desc *s, void *out)
{
    uint32_t c0 = s->tile * t->slice_floats;
    const float *a = table + (uint64_t)s->row_a * row_stride;
    const float *b = s->row_b >= 0 ? table + (uint64_t)s->row_b * row_stride : NULL;
    for (uint32_t j = 0; j < t->slice_floats; j++) {
        uint32_t c = c0 + j;
        if (t->format == PIM_FORMAT_FP32) {
            ((float *)out)[j] = c < t->dim ? (b ? a[c] + b[c] : a[c]) : 0.0f;
            continue;
        }
        int32_t qa = 0, qb = 0;
        if (c < t->dim && (!quantize(t, a[c], &qa) || (b && !quantize(t, b[c], &qb)))) return false;
        ((int32_t *)out)[j] = qa + qb;
    }
    return true;
}

/* Places a region of need bytes: in place when it fits the table's old region (or the old one is last), else
 * after everything in use. False when the set's space is used up. */
static bool place_region(uint32_t *base, uint32_t *capacity, int has, uint32_t need, uint32_t *used, uint32_t limit)
{
    if (has && need <= *capacity) return true;
    if (has && *base + *capacity == *used && *base + (uint64_t)need <= limit) {
        *capacity = need;
        *used = *base + need;
        return true;
    }
    if ((uint64_t)*used + need > limit) return false;
    *base = *used;
    *capacity = need;
    *used += need;
    return true;
}

/* Loads table `id` of the set: slots[] holds the stored vectors of DPU 0, then DPU 1, ... (slots_per_dpu[d] each),
 * cache[] the vectors replicated into every DPU's WRAM cache. table: rows x row_stride_floats fp32, dim used
 * columns. format PIM_FORMAT_INT32 stores fixed-point values with a scale chosen from the table's range (twice
 * its largest magnitude fits PIM_INT_BITS, so merged rows may grow). Other tables of the set keep serving. */
PIM_API int pim_load_table(struct pim_ctx *ctx, uint32_t id, const float *table, uint64_t rows, uint32_t dim, uint64_t row_stride_floats,
                           uint32_t slice_floats, uint32_t format, const pim_slot_desc *slots, const uint32_t *slots_per_dpu,
                           const pim_slot_desc *cache, uint32_t nr_cache)
{
    if (!ctx || !table || !slots_per_dpu) return set_error(PIM_E_ARGUMENT, "pim_load_table: null argument");
    if (id >= PIM_MAX_TABLES) return set_error(PIM_E_CAPACITY, "pim_load_table: table id %u, a DPU set holds %u tables", id, PIM_MAX_TABLES);
    if (format != PIM_FORMAT_FP32 && format != PIM_FORMAT_INT32) return set_error(PIM_E_ARGUMENT, "pim_load_table: format %u is neither fp32 (0) nor int32 (1)", format);
    if (rows == 0 || dim == 0 || row_stride_floats < dim)
        return set_error(PIM_E_ARGUMENT, "pim_load_table: rows %llu, dim %u, row stride %llu floats is not a table",
                         (unsigned long long)rows, dim, (unsigned long long)row_stride_floats);
    if (slice_floats < 2 || slice_floats > PIM_MAX_SLICE_FLOATS || slice_floats % 2)
        return set_error(PIM_E_ARGUMENT, "pim_load_table: slice width %u floats must be even and in [2, %u] (8-byte DMA, one read per lookup)",
                         slice_floats, PIM_MAX_SLICE_FLOATS);
    struct pim_table *t = &ctx->tables[id];
    /* Validate everything against the new geometry before touching the context. */
    struct pim_table probe = *t;
    probe.dim = dim;
    probe.slice_floats = slice_floats;
    probe.slot_bytes = slice_floats * 4;
    probe.nr_tiles = (dim + slice_floats - 1) / slice_floats;
    probe.format = format;
    probe.nr_cache = nr_cache;
    uint32_t slot_bytes = probe.slot_bytes;
    uint64_t total = 0, max_slots = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        if ((uint64_t)slots_per_dpu[d] * slot_bytes > PIM_MRAM_TABLE_BYTES)
            return set_error(PIM_E_CAPACITY, "DPU %u: %u slots x %u B = %llu B exceed its MRAM table region of %u B",
                             d, slots_per_dpu[d], slot_bytes, (unsigned long long)slots_per_dpu[d] * slot_bytes, PIM_MRAM_TABLE_BYTES);
        total += slots_per_dpu[d];
        if (slots_per_dpu[d] > max_slots) max_slots = slots_per_dpu[d];
    }
    if (total && !slots) return set_error(PIM_E_ARGUMENT, "pim_load_table: null slots");
    for (uint64_t i = 0; i < total; i++) {
        int rc = check_slot(&probe, rows, &slots[i], "slots", i);
        if (rc) return rc;
    }
    if ((uint64_t)nr_cache * slot_bytes > PIM_WRAM_CACHE_BYTES)
        return set_error(PIM_E_CAPACITY, "%u cache vectors x %u B exceed the WRAM cache of %u B", nr_cache, slot_bytes, PIM_WRAM_CACHE_BYTES);
    if (nr_cache && !cache) return set_error(PIM_E_ARGUMENT, "pim_load_table: null cache");
    for (uint32_t i = 0; i < nr_cache; i++) {
        int rc = check_slot(&probe, rows, &cache[i], "cache", i);
        if (rc) return rc;
    }
    uint32_t mram_used = ctx->mram_used, cache_used = ctx->cache_used;
    if (!place_region(&probe.slot_base, &probe.slot_capacity, t->has_region, (uint32_t)round8(max_slots * slot_bytes), &mram_used, PIM_MRAM_TABLE_BYTES))
        return set_error(PIM_E_CAPACITY, "table %u needs %llu B of MRAM per DPU; the set's tables already use %u of %u B (place fewer tables per set)",
                         id, (unsigned long long)max_slots * slot_bytes, ctx->mram_used, PIM_MRAM_TABLE_BYTES);
    if (!place_region(&probe.cache_base, &probe.cache_capacity, t->has_region, nr_cache * slot_bytes, &cache_used, PIM_WRAM_CACHE_BYTES))
        return set_error(PIM_E_CAPACITY, "table %u needs %u B of WRAM cache; the set's tables already use %u of %u B",
                         id, nr_cache * slot_bytes, ctx->cache_used, PIM_WRAM_CACHE_BYTES);
    probe.scale = 1.0;
    if (format == PIM_FORMAT_INT32) {
        float max = 0.0f;
        for (uint64_t r = 0; r < rows; r++)
            for (uint32_t c = 0; c < dim; c++) {
                float v = fabsf(table[r * row_stride_floats + c]);
                if (!(v <= max)) max = v;   /* NaN propagates and is refused below */
            }
        if (!isfinite(max)) return set_error(PIM_E_ARGUMENT, "pim_load_table: the table holds a non-finite value; int32 storage needs finite values");
        probe.scale = max > 0.0f ? 2.0 * max / (double)(1u << PIM_INT_BITS) : 1.0 / (double)(1u << PIM_INT_BITS);
    }
    uint32_t *nr_slots = t->nr_slots ? t->nr_slots : calloc(ctx->nr_dpus, sizeof *nr_slots);
    if (!nr_slots) return set_error(PIM_E_MEMORY, "pim_load_table: out of memory");

    /* From here the old copy of this table is gone: a failure leaves it unloaded (its lookups refuse). */
    probe.loaded = 0;
    probe.has_region = 1;
    probe.rows = rows;
    probe.nr_slots = nr_slots;
    *t = probe;
    ctx->mram_used = mram_used;
    ctx->cache_used = cache_used;
    int rc = PIM_OK;
    uint64_t *first = NULL;

    /* MRAM: in chunks of up to 1 MB per DPU, one push per chunk (all DPUs, one padded length). */
    uint32_t chunk_slots = (1u << 20) / slot_bytes;
    if ((rc = ensure_stage(ctx, (size_t)chunk_slots * slot_bytes)) != PIM_OK) goto done;
    first = calloc(ctx->nr_dpus, sizeof *first);
    if (!first) { rc = set_error(PIM_E_MEMORY, "pim_load_table: out of memory"); goto done; }
    for (uint32_t d = 1; d < ctx->nr_dpus; d++) first[d] = first[d - 1] + slots_per_dpu[d - 1];
    for (uint64_t base = 0; base < max_slots; base += chunk_slots) {
        uint64_t n = max_slots - base < chunk_slots ? max_slots - base : chunk_slots;
        for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
            uint8_t *buf = ctx->stage + d * ctx->stage_each;
            for (uint64_t k = 0; k < n; k++) {
                uint64_t s = base + k;
                if (s < slots_per_dpu[d]) fill_vector(t, table, row_stride_floats, &slots[first[d] + s], buf + k * slot_bytes);
                else memset(buf + k * slot_bytes, 0, slot_bytes);
            }
        }
        if ((rc = push_stage(ctx, DPU_XFER_TO_DPU, "pim_table", (uint32_t)(t->slot_base + base * slot_bytes), round8(n * slot_bytes), "dpu_push_xfer (table)")) != PIM_OK)
            goto done;
        ctx->stats.bytes_to_dpu += round8(n * slot_bytes) * ctx->nr_dpus;
    }
    /* Per-DPU arguments (slot counts differ): one push. */
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        pim_table_args *args = (pim_table_args *)(ctx->stage + d * ctx->stage_each);
        *args = (pim_table_args){ slice_floats, slot_bytes, slots_per_dpu[d], nr_cache, t->slot_base, t->cache_base, format, 0 };
    }
    if ((rc = push_stage(ctx, DPU_XFER_TO_DPU, "pim_args", id * (uint32_t)sizeof(pim_table_args), sizeof(pim_table_args), "dpu_push_xfer (args)")) != PIM_OK)
        goto done;
    /* WRAM cache: the same vectors on every DPU, one broadcast. */
    if (nr_cache) {
        uint8_t *buf = calloc(nr_cache, slot_bytes);
        if (!buf) { rc = set_error(PIM_E_MEMORY, "pim_load_table: out of memory"); goto done; }
        for (uint32_t c = 0; c < nr_cache; c++) fill_vector(t, table, row_stride_floats, &cache[c], buf + (size_t)c * slot_bytes);
        dpu_error_t err = dpu_broadcast_to(ctx->set, "pim_cache", t->cache_base, buf, (size_t)nr_cache * slot_bytes, DPU_XFER_DEFAULT);
        free(buf);
        if (err != DPU_OK) { rc = dpu_failure_on(ctx->set, err, "dpu_broadcast_to (cache)"); goto done; }
        ctx->stats.bytes_to_dpu += (uint64_t)nr_cache * slot_bytes * ctx->nr_dpus;
    }
    memcpy(t->nr_slots, slots_per_dpu, ctx->nr_dpus * sizeof *slots_per_dpu);
    t->loaded = 1;
done:
    free(first);
    return rc;
}

/* The fixed-point scale of an int32 table (value = q * scale); 1 for fp32. */
PIM_API int pim_table_scale(const struct pim_ctx *ctx, uint32_t id, double *scale)
{
    if (!ctx || !scale) return set_error(PIM_E_ARGUMENT, "pim_table_scale: null argument");
    if (id >= PIM_MAX_TABLES || !ctx->tables[id].loaded) return set_error(PIM_E_STATE, "pim_table_scale: table %u is not loaded", id);
    *scale = ctx->tables[id].scale;
    return PIM_OK;
}

/* ------------------------------------------------------------------------------------------ updates */

/* The baseline: one dpu_copy_to per MRAM slot, one broadcast per cache vector. */
static int update_per_slot(struct pim_ctx *ctx, struct pim_table *t, const float *table, uint64_t stride, const pim_slot_desc *writes, uint32_t nr)
{
    int rc = PIM_OK;
    uint64_t vec[PIM_MAX_SLICE_FLOATS / 2];
    for (uint32_t i = 0; i < nr; i++) {
        fill_vector(t, table, stride, &writes[i], vec);
        if (writes[i].dpu == PIM_ALL_DPUS) {
            PIM_TRY(ctx, dpu_broadcast_to(ctx->set, "pim_cache", t->cache_base + writes[i].slot * t->slot_bytes, vec, t->slot_bytes, DPU_XFER_DEFAULT),
                    "dpu_broadcast_to (cache row)");
            ctx->stats.bytes_to_dpu += (uint64_t)t->slot_bytes * ctx->nr_dpus;
        } else {
            PIM_TRY(ctx, dpu_copy_to(ctx->dpus[writes[i].dpu], "pim_table", t->slot_base + writes[i].slot * t->slot_bytes, vec, t->slot_bytes),
                    "dpu_copy_to (row)");
            ctx->stats.bytes_to_dpu += t->slot_bytes;
        }
    }
done:
    return rc;
}

/* Batched: per round, every DPU receives its update records and vectors in one push, and one launch applies them
 * (cache vectors go to every DPU's list). A round holds as many writes per DPU as fit pim_in. */
static int update_batched(struct pim_ctx *ctx, uint32_t id, const float *table, uint64_t stride, const pim_slot_desc *writes, uint32_t nr)
{
    struct pim_table *t = &ctx->tables[id];
    uint32_t per_round = (PIM_MRAM_IN_BYTES - sizeof(pim_batch_header)) / (sizeof(pim_update) + t->slot_bytes);
    uint32_t nr_cache_writes = 0;
    for (uint32_t i = 0; i < nr; i++) nr_cache_writes += writes[i].dpu == PIM_ALL_DPUS;
    /* Writes of each DPU in order: counts, then a bucket index. */
    uint32_t *count = calloc(ctx->nr_dpus + 1, sizeof *count);
    uint32_t *order = malloc(((size_t)nr + 1) * sizeof *order);
    uint32_t *cache_writes = malloc(((size_t)nr_cache_writes + 1) * sizeof *cache_writes);
    uint32_t *cursor = calloc(ctx->nr_dpus + 1, sizeof *cursor);
    int rc = PIM_OK;
    if (!count || !order || !cache_writes || !cursor) { rc = set_error(PIM_E_MEMORY, "pim_update_rows: out of memory"); goto done; }
    uint32_t nc = 0;
    for (uint32_t i = 0; i < nr; i++)
        if (writes[i].dpu == PIM_ALL_DPUS) cache_writes[nc++] = i;
        else count[writes[i].dpu + 1]++;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) count[d + 1] += count[d];   /* count[d] = first index of DPU d */
    for (uint32_t i = 0; i < nr; i++)
        if (writes[i].dpu != PIM_ALL_DPUS) order[count[writes[i].dpu] + cursor[writes[i].dpu]++] = i;
    uint32_t most = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint32_t n = count[d + 1] - count[d] + nc;
        if (n > most) most = n;
    }
    for (uint32_t round = 0; round * per_round < most; round++) {
        uint32_t lo = round * per_round;
        uint32_t in_round = most - lo < per_round ? most - lo : per_round;
        size_t vectors_offset = round8(sizeof(pim_batch_header) + (size_t)in_round * sizeof(pim_update));
        size_t len = 0;
        if ((rc = ensure_stage(ctx, vectors_offset + (size_t)in_round * t->slot_bytes)) != PIM_OK) goto done;
        for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
            uint8_t *buf = ctx->stage + d * ctx->stage_each;
            uint32_t own = count[d + 1] - count[d], total = own + nc;
            uint32_t n = total > lo ? (total - lo < per_round ? total - lo : per_round) : 0;
            pim_update *records = (pim_update *)(buf + sizeof(pim_batch_header));
            for (uint32_t k = 0; k < n; k++) {
                uint32_t j = lo + k;
                const pim_slot_desc *w = &writes[j < own ? order[count[d] + j] : cache_writes[j - own]];
                uint32_t at = (uint32_t)(vectors_offset + (size_t)k * t->slot_bytes);
                records[k] = (pim_update){ id | (w->dpu == PIM_ALL_DPUS ? PIM_UPDATE_CACHE : 0), w->slot, at, 0 };
                fill_vector(t, table, stride, w, buf + at);
            }
            *(pim_batch_header *)buf = (pim_batch_header){ PIM_MODE_UPDATE, n, (uint32_t)vectors_offset, 0 };
            size_t used = round8(vectors_offset + (size_t)n * t->slot_bytes);
            if (used > len) len = used;
        }
        if ((rc = push_stage(ctx, DPU_XFER_TO_DPU, "pim_in", 0, len, "dpu_push_xfer (updates)")) != PIM_OK) goto done;
        PIM_TRY(ctx, dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch (updates)");
        ctx->stats.bytes_to_dpu += (uint64_t)len * ctx->nr_dpus;
        ctx->stats.update_launches++;
    }
done:
    free(count);
    free(order);
    free(cache_writes);
    free(cursor);
    return rc;
}

/* Rewrites stored vectors of table `id` after rows changed (e.g. LoRA merges): each write names a DPU and slot
 * (or PIM_ALL_DPUS and a cache index) and what the slot holds; the vector is rebuilt from table. flags 0: batched
 * (one push + one launch per round); PIM_UPDATE_PER_SLOT: one transfer call per vector. An int32 table whose new
 * values leave its range is refused with PIM_E_RANGE before anything is sent (reload it). */
PIM_API int pim_update_rows(struct pim_ctx *ctx, uint32_t id, const float *table, uint64_t rows, uint64_t row_stride_floats,
                            const pim_slot_desc *writes, uint32_t nr_writes, uint32_t flags)
{
    if (!ctx || (nr_writes && (!table || !writes))) return set_error(PIM_E_ARGUMENT, "pim_update_rows: null argument");
    if (id >= PIM_MAX_TABLES || !ctx->tables[id].loaded) return set_error(PIM_E_STATE, "pim_update_rows: table %u is not loaded", id);
    struct pim_table *t = &ctx->tables[id];
    if (rows != t->rows || row_stride_floats < t->dim)
        return set_error(PIM_E_ARGUMENT, "pim_update_rows: table of %llu rows (stride %llu) does not match the loaded %llu x %u",
                         (unsigned long long)rows, (unsigned long long)row_stride_floats, (unsigned long long)t->rows, t->dim);
    uint64_t vec[PIM_MAX_SLICE_FLOATS / 2];
    for (uint32_t i = 0; i < nr_writes; i++) {
        int rc = check_slot(t, rows, &writes[i], "writes", i);
        if (rc) return rc;
        if (writes[i].dpu == PIM_ALL_DPUS) {
            if (writes[i].slot >= t->nr_cache)
                return set_error(PIM_E_ARGUMENT, "writes[%u]: cache slot %u, the cache holds %u", i, writes[i].slot, t->nr_cache);
        } else if (writes[i].dpu >= ctx->nr_dpus)
            return set_error(PIM_E_ARGUMENT, "writes[%u]: DPU %u, the context has %u", i, writes[i].dpu, ctx->nr_dpus);
        else if (writes[i].slot >= t->nr_slots[writes[i].dpu])
            return set_error(PIM_E_ARGUMENT, "writes[%u]: slot %u, DPU %u holds %u", i, writes[i].slot, writes[i].dpu, t->nr_slots[writes[i].dpu]);
        if (t->format == PIM_FORMAT_INT32 && !fill_vector(t, table, row_stride_floats, &writes[i], vec))
            return set_error(PIM_E_RANGE, "writes[%u]: row %lld exceeds the int32 table's range (scale %g, |q| <= 2^%u): reload the table",
                             i, (long long)writes[i].row_a, t->scale, PIM_INT_BITS);
    }
    uint64_t t0 = now_ns();
    int rc = (flags & PIM_UPDATE_PER_SLOT) ? update_per_slot(ctx, t, table, row_stride_floats, writes, nr_writes)
                                           : update_batched(ctx, id, table, row_stride_floats, writes, nr_writes);
    if (rc != PIM_OK) { t->loaded = 0; return rc; }   /* some slots may be stale: refuse lookups until reloaded */
    ctx->stats.updated_vectors += nr_writes;
    ctx->stats.ns_update += now_ns() - t0;
    return PIM_OK;
}

/* ------------------------------------------------------------------------------------------ lookup */

static uint32_t dpu_segments_of(const struct pim_table *t, uint32_t item_count)
{
    if (t->format != PIM_FORMAT_INT32 || item_count <= PIM_INT_SEGMENT_ITEMS) return 1;
    return (item_count + PIM_INT_SEGMENT_ITEMS - 1) / PIM_INT_SEGMENT_ITEMS;
}

/* One launch over several tables. For batch b and DPU d: segs_per_dpu[d] segments (concatenated in DPU order in
 * segs) over its items (items_per_dpu[d] entries, concatenated in DPU order; segment item_begin is relative to the
 * DPU's block). Each output: nr_bags x dim floats, overwritten with the sums (Σ over all DPUs' partials). Segments
 * of int32 tables longer than PIM_INT_SEGMENT_ITEMS are split so no DPU partial can leave int32. */
PIM_API int pim_lookup_tables(struct pim_ctx *ctx, const pim_table_batch *batches, uint32_t nr_batches)
{
    if (!ctx || (nr_batches && !batches)) return set_error(PIM_E_ARGUMENT, "pim_lookup_tables: null argument");
    uint64_t t0 = now_ns();
    int any_weights = 0;
    uint64_t int_floats = 0;
    for (uint32_t b = 0; b < nr_batches; b++) {
        const pim_table_batch *x = &batches[b];
        if (x->table >= PIM_MAX_TABLES || !ctx->tables[x->table].loaded)
            return set_error(PIM_E_STATE, "pim_lookup: table %u is not loaded (or its last load/update failed)", x->table);
        const struct pim_table *t = &ctx->tables[x->table];
        if (!x->segs_per_dpu || !x->items_per_dpu || (x->nr_bags && !x->output)) return set_error(PIM_E_ARGUMENT, "pim_lookup: null argument in batch %u", b);
        if (x->output_floats < (uint64_t)x->nr_bags * t->dim)
            return set_error(PIM_E_ARGUMENT, "pim_lookup: output holds %llu floats, %u bags x dim %u need more",
                             (unsigned long long)x->output_floats, x->nr_bags, t->dim);
        if (x->weights && t->format == PIM_FORMAT_INT32)
            return set_error(PIM_E_ARGUMENT, "pim_lookup: table %u is stored as int32; weighted sums need an fp32 table", x->table);
        for (uint32_t c = 0; c < b; c++)
            if (batches[c].table == x->table) return set_error(PIM_E_ARGUMENT, "pim_lookup: table %u appears twice in one launch", x->table);
        any_weights |= x->weights != NULL;
        if (t->format == PIM_FORMAT_INT32) int_floats += (uint64_t)x->nr_bags * t->dim;
    }
    /* Where each DPU's segments and items start in each batch: prefix sums over DPUs. */
    size_t stride = (size_t)ctx->nr_dpus + 1;
    uint64_t *seg_first = malloc(sizeof(uint64_t) * stride * (nr_batches ? nr_batches : 1) * 2 + sizeof(uint64_t) * (nr_batches + 1));
    if (!seg_first) return set_error(PIM_E_MEMORY, "pim_lookup: out of memory");
    uint64_t *item_first = seg_first + stride * nr_batches;
    uint64_t *int_base = item_first + stride * nr_batches;   /* offset of batch b's int64 sums in ctx->iacc */
    int_base[0] = 0;
    for (uint32_t b = 0; b < nr_batches; b++) {
        uint64_t *sf = seg_first + b * stride, *itf = item_first + b * stride;
        sf[0] = itf[0] = 0;
        for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
            sf[d + 1] = sf[d] + batches[b].segs_per_dpu[d];
            itf[d + 1] = itf[d] + batches[b].items_per_dpu[d];
        }
        const struct pim_table *t = &ctx->tables[batches[b].table];
        int_base[b + 1] = int_base[b] + (t->format == PIM_FORMAT_INT32 ? (uint64_t)batches[b].nr_bags * t->dim : 0);
    }
    int rc = PIM_OK;
    /* Validate and size every DPU's buffer first. */
    size_t in_len = 0, out_len = 0;
    uint64_t total_dpu_segs = 0, nr_items = 0, cache_items = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint64_t padded = 0, nsegs = 0, obytes = 0;
        for (uint32_t b = 0; b < nr_batches; b++) {
            const pim_table_batch *x = &batches[b];
            const struct pim_table *t = &ctx->tables[x->table];
            uint64_t seg_base = seg_first[b * stride + d], item_base = item_first[b * stride + d];
            for (uint32_t s = 0; s < x->segs_per_dpu[d]; s++) {
                const pim_host_segment *g = &x->segs[seg_base + s];
                if (g->bag >= x->nr_bags || g->tile >= t->nr_tiles || (uint64_t)g->item_begin + g->item_count > x->items_per_dpu[d])
                    { rc = set_error(PIM_E_ARGUMENT, "pim_lookup: table %u DPU %u segment %u (bag %u, tile %u, items %u+%u) outside %u bags, %u tiles, %u items",
                                     x->table, d, s, g->bag, g->tile, g->item_begin, g->item_count, x->nr_bags, t->nr_tiles, x->items_per_dpu[d]); goto done; }
                uint32_t parts = dpu_segments_of(t, g->item_count);
                for (uint32_t p = 0; p < parts; p++) {
                    uint32_t n = g->item_count - p * PIM_INT_SEGMENT_ITEMS;
                    if (parts > 1 && n > PIM_INT_SEGMENT_ITEMS) n = PIM_INT_SEGMENT_ITEMS;
                    padded += (n + 1) & ~1u;
                }
                nsegs += parts;
                obytes += (uint64_t)parts * t->slot_bytes;
            }
            for (uint32_t k = 0; k < x->items_per_dpu[d]; k++) {
                uint32_t it = x->items[item_base + k];
                int cached = (it & PIM_ITEM_CACHE_BIT) != 0;
                uint32_t idx = it & ~PIM_ITEM_CACHE_BIT;
                if (cached ? idx >= t->nr_cache : idx >= t->nr_slots[d])
                    { rc = set_error(PIM_E_ARGUMENT, "pim_lookup: table %u DPU %u item %u names %s %u, which holds %u", x->table, d, k,
                                     cached ? "cache vector" : "slot", idx, cached ? t->nr_cache : t->nr_slots[d]); goto done; }
            }
        }
        size_t items_offset = round8(sizeof(pim_batch_header) + nsegs * sizeof(pim_segment));
        size_t len = round8(items_offset + (padded + 1) * sizeof(uint32_t));
        if (any_weights) len = round8(len + (padded + 1) * sizeof(float));
        if (len > PIM_MRAM_IN_BYTES || obytes > PIM_MRAM_OUT_BYTES)
            { rc = set_error(PIM_E_CAPACITY, "pim_lookup: DPU %u needs %zu B of input and %llu B of output, the MRAM regions hold %u and %u: split the batch",
                             d, len, (unsigned long long)obytes, PIM_MRAM_IN_BYTES, PIM_MRAM_OUT_BYTES); goto done; }
        if (len > in_len) in_len = len;
        if (obytes > out_len) out_len = obytes;
        total_dpu_segs += nsegs;
    }
    if ((rc = ensure_stage(ctx, in_len > out_len ? in_len : out_len)) != PIM_OK) goto done;
    if (total_dpu_segs > ctx->seg_map_cap) {
        uint64_t *p = realloc(ctx->seg_map, total_dpu_segs * sizeof *p);
        if (!p) { rc = set_error(PIM_E_MEMORY, "pim_lookup: out of memory"); goto done; }
        ctx->seg_map = p;
        ctx->seg_map_cap = total_dpu_segs;
    }
    if (int_floats > ctx->iacc_cap) {
        int64_t *p = realloc(ctx->iacc, int_floats * sizeof *p);
        if (!p) { rc = set_error(PIM_E_MEMORY, "pim_lookup: out of memory"); goto done; }
        ctx->iacc = p;
        ctx->iacc_cap = int_floats;
    }

    /* Pack: header, segments, item lists (each segment from an even index, padded), weights. */
    uint64_t map_at = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint8_t *buf = ctx->stage + d * ctx->stage_each;
        memset(buf, 0, in_len);
        uint32_t nsegs = 0, padded = 0;
        for (uint32_t b = 0; b < nr_batches; b++) {
            const pim_table_batch *x = &batches[b];
            const struct pim_table *t = &ctx->tables[x->table];
            uint64_t seg_base = seg_first[b * stride + d];
            for (uint32_t s = 0; s < x->segs_per_dpu[d]; s++) {
                const pim_host_segment *g = &x->segs[seg_base + s];
                uint32_t parts = dpu_segments_of(t, g->item_count);
                for (uint32_t p = 0; p < parts; p++) {
                    uint32_t n = g->item_count - p * PIM_INT_SEGMENT_ITEMS;
                    if (parts > 1 && n > PIM_INT_SEGMENT_ITEMS) n = PIM_INT_SEGMENT_ITEMS;
                    padded += (n + 1) & ~1u;
                }
                nsegs += parts;
            }
        }
        size_t items_offset = round8(sizeof(pim_batch_header) + (size_t)nsegs * sizeof(pim_segment));
        /* Weights after the items (and their one spare padding item), 8-byte aligned, same indices as the items. */
        size_t weights_offset = any_weights ? round8(items_offset + ((size_t)padded + 1) * sizeof(uint32_t)) : 0;
        pim_segment *dsegs = (pim_segment *)(buf + sizeof(pim_batch_header));
        uint32_t *ditems = (uint32_t *)(buf + items_offset);
        float *dweights = any_weights ? (float *)(buf + weights_offset) : NULL;
        uint32_t at = 0, k_seg = 0, out_at = 0;
        for (uint32_t b = 0; b < nr_batches; b++) {
            const pim_table_batch *x = &batches[b];
            const struct pim_table *t = &ctx->tables[x->table];
            uint64_t seg_base = seg_first[b * stride + d], item_base = item_first[b * stride + d];
            for (uint32_t s = 0; s < x->segs_per_dpu[d]; s++) {
                const pim_host_segment *g = &x->segs[seg_base + s];
                uint32_t parts = dpu_segments_of(t, g->item_count);
                for (uint32_t p = 0; p < parts; p++) {
                    uint32_t from = p * PIM_INT_SEGMENT_ITEMS;
                    uint32_t n = parts > 1 ? (g->item_count - from < PIM_INT_SEGMENT_ITEMS ? g->item_count - from : PIM_INT_SEGMENT_ITEMS) : g->item_count;
                    dsegs[k_seg] = (pim_segment){ at, n, x->table | (x->weights ? PIM_SEGMENT_WEIGHTED : 0), out_at };
                    for (uint32_t k = 0; k < n; k++) {
                        uint32_t it = x->items[item_base + g->item_begin + from + k];
                        cache_items += (it & PIM_ITEM_CACHE_BIT) != 0;
                        ditems[at + k] = it;
                        if (x->weights) dweights[at + k] = x->weights[item_base + g->item_begin + from + k];
                    }
                    ctx->seg_map[map_at++] = (uint64_t)b << 32 | (seg_base + s);
                    at += (n + 1) & ~1u;
                    out_at += t->slot_bytes;
                    k_seg++;
                }
            }
            nr_items += x->items_per_dpu[d];
        }
        *(pim_batch_header *)buf = (pim_batch_header){ PIM_MODE_LOOKUP, nsegs, (uint32_t)items_offset, (uint32_t)weights_offset };
    }
    if ((rc = push_stage(ctx, DPU_XFER_TO_DPU, "pim_in", 0, in_len, "dpu_push_xfer (batch)")) != PIM_OK) goto done;
    uint64_t t1 = now_ns();
    PIM_TRY(ctx, dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch");
    uint64_t t2 = now_ns();
    if (out_len && (rc = push_stage(ctx, DPU_XFER_FROM_DPU, "pim_out", 0, out_len, "dpu_push_xfer (partials)")) != PIM_OK) goto done;
    uint64_t t3 = now_ns();

    /* Reduce: DPU 0 first, then 1, ...; within a DPU its segments in order. fp32 in float (a fixed order), int32
     * tables in int64 (exact), converted once at the end. */
    for (uint32_t b = 0; b < nr_batches; b++) {
        const struct pim_table *t = &ctx->tables[batches[b].table];
        if (t->format == PIM_FORMAT_INT32) memset(ctx->iacc + int_base[b], 0, (int_base[b + 1] - int_base[b]) * sizeof(int64_t));
        else memset(batches[b].output, 0, (size_t)batches[b].nr_bags * t->dim * sizeof(float));
    }
    map_at = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        const uint8_t *partials = ctx->stage + d * ctx->stage_each;
        uint32_t out_at = 0;
        uint64_t end = map_at;
        /* This DPU's segments are the next ones of seg_map until its own count is used up. */
        uint32_t nsegs = 0;
        for (uint32_t b = 0; b < nr_batches; b++) {
            const pim_table_batch *x = &batches[b];
            const struct pim_table *t = &ctx->tables[x->table];
            uint64_t seg_base = seg_first[b * stride + d];
            for (uint32_t s = 0; s < x->segs_per_dpu[d]; s++) nsegs += dpu_segments_of(t, x->segs[seg_base + s].item_count);
        }
        end += nsegs;
        for (; map_at < end; map_at++) {
            uint32_t b = (uint32_t)(ctx->seg_map[map_at] >> 32);
            const pim_table_batch *x = &batches[b];
            const struct pim_table *t = &ctx->tables[x->table];
            const pim_host_segment *g = &x->segs[(uint32_t)ctx->seg_map[map_at]];
            uint32_t c0 = g->tile * t->slice_floats;
            uint32_t width = t->dim - c0 < t->slice_floats ? t->dim - c0 : t->slice_floats;
            if (t->format == PIM_FORMAT_INT32) {
                int64_t *o = ctx->iacc + int_base[b] + (size_t)g->bag * t->dim + c0;
                const int32_t *p = (const int32_t *)(partials + out_at);
                for (uint32_t j = 0; j < width; j++) o[j] += p[j];
            } else {
                float *o = x->output + (size_t)g->bag * t->dim + c0;
                const float *p = (const float *)(partials + out_at);
                for (uint32_t j = 0; j < width; j++) o[j] += p[j];
            }
            out_at += t->slot_bytes;
        }
    }
    for (uint32_t b = 0; b < nr_batches; b++) {
        const struct pim_table *t = &ctx->tables[batches[b].table];
        if (t->format != PIM_FORMAT_INT32) continue;
        const int64_t *p = ctx->iacc + int_base[b];
        size_t n = (size_t)(int_base[b + 1] - int_base[b]);
        for (size_t i = 0; i < n; i++) batches[b].output[i] = (float)((double)p[i] * t->scale);
    }
    uint64_t t4 = now_ns();
    ctx->stats.batches += nr_batches;
    ctx->stats.launches++;
    ctx->stats.bytes_to_dpu += (uint64_t)in_len * ctx->nr_dpus;
    ctx->stats.bytes_from_dpu += (uint64_t)out_len * ctx->nr_dpus;
    ctx->stats.items += nr_items;
    ctx->stats.cache_items += cache_items;
    ctx->stats.ns_to_dpu += t1 - t0;
    ctx->stats.ns_kernel += t2 - t1;
    ctx->stats.ns_from_dpu += t3 - t2;
    ctx->stats.ns_host_reduce += t4 - t3;
done:
    free(seg_first);
    return rc;
}

/* One table's batch: pim_lookup_tables with one entry. */
PIM_API int pim_lookup(struct pim_ctx *ctx, uint32_t id, const pim_host_segment *segs, const uint32_t *segs_per_dpu,
                       const uint32_t *items, const float *weights, const uint32_t *items_per_dpu, uint32_t nr_bags,
                       float *output, uint64_t output_floats)
{
    pim_table_batch batch = { id, nr_bags, segs, segs_per_dpu, items, weights, items_per_dpu, output, output_floats };
    return pim_lookup_tables(ctx, &batch, 1);
}

PIM_API int pim_stats(const struct pim_ctx *ctx, pim_stats_t *out)
{
    if (!ctx || !out) return set_error(PIM_E_ARGUMENT, "pim_stats: null argument");
    *out = ctx->stats;
    return PIM_OK;
}

/* The kernel's cycle counter of the last launch (pim_cycles: perfcounter on hardware, the model's DMA cycles on
 * the emulation), the largest over the set's DPUs. */
PIM_API int pim_kernel_cycles(struct pim_ctx *ctx, uint64_t *max_cycles)
{
    if (!ctx || !max_cycles) return set_error(PIM_E_ARGUMENT, "pim_kernel_cycles: null argument");
    int rc = ensure_stage(ctx, sizeof(uint64_t));
    if (rc) return rc;
    if ((rc = push_stage(ctx, DPU_XFER_FROM_DPU, "pim_cycles", 0, sizeof(uint64_t), "dpu_push_xfer (cycles)")) != PIM_OK) return rc;
    uint64_t most = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint64_t c;
        memcpy(&c, ctx->stage + d * ctx->stage_each, sizeof c);
        if (c > most) most = c;
    }
    *max_cycles = most;
    return PIM_OK;
}

/* ------------------------------------------------------------------------------------------ test probes */

/* Loads a test kernel (kernel_path) on one DPU and, when args is given, writes probe_args and launches it; with
 * launch_only set, launches it without arguments. For the tests of the emulation's rule enforcement. */
static int run_probe(const char *kernel_path, const char *profile, const pim_probe_args *args, int launch_only)
{
    if (!kernel_path) return set_error(PIM_E_ARGUMENT, "pim_run_probe: null kernel path");
    struct pim_ctx probe;
    memset(&probe, 0, sizeof probe);
    struct pim_ctx *ctx = &probe;
    int rc = PIM_OK;
    PIM_TRY(ctx, dpu_alloc(1, profile && *profile ? profile : NULL, &ctx->set), "dpu_alloc");
    ctx->allocated = 1;
    PIM_TRY(ctx, dpu_load(ctx->set, kernel_path, NULL), "dpu_load");
    if (args) {
        pim_probe_args copy = *args;
        PIM_TRY(ctx, dpu_copy_to(ctx->set, "probe_args", 0, &copy, sizeof copy), "dpu_copy_to (probe_args)");
        PIM_TRY(ctx, dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch");
    } else if (launch_only)
        PIM_TRY(ctx, dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch");
done:
    if (ctx->allocated) dpu_free(ctx->set);
    return rc;
}

PIM_API int pim_run_probe(const char *kernel_path, const char *profile, const pim_probe_args *args)
{
    return run_probe(kernel_path, profile, args, 0);
}

PIM_API int pim_run_kernel(const char *kernel_path, const char *profile)
{
    return run_probe(kernel_path, profile, NULL, 1);
}

/* Runs the race test kernel (kernel_path) on one DPU: every tasklet increments a shared counter, guarded by a mutex
 * or not; count receives the final value (NR_TASKLETS when no update was lost). */
PIM_API int pim_run_race_probe(const char *kernel_path, const char *profile, uint32_t guarded, uint32_t *count)
{
    if (!kernel_path || !count) return set_error(PIM_E_ARGUMENT, "pim_run_race_probe: null argument");
    struct pim_ctx probe;
    memset(&probe, 0, sizeof probe);
    struct pim_ctx *ctx = &probe;
    int rc = PIM_OK;
    uint32_t zero = 0;
    PIM_TRY(ctx, dpu_alloc(1, profile && *profile ? profile : NULL, &ctx->set), "dpu_alloc");
    ctx->allocated = 1;
    PIM_TRY(ctx, dpu_load(ctx->set, kernel_path, NULL), "dpu_load");
    PIM_TRY(ctx, dpu_copy_to(ctx->set, "race_guarded", 0, &guarded, sizeof guarded), "dpu_copy_to (race_guarded)");
    PIM_TRY(ctx, dpu_copy_to(ctx->set, "race_count", 0, &zero, sizeof zero), "dpu_copy_to (race_count)");
    PIM_TRY(ctx, dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch");
    struct dpu_set_t dpu;
    DPU_FOREACH(ctx->set, dpu) PIM_TRY(ctx, dpu_copy_from(dpu, "race_count", 0, count, sizeof *count), "dpu_copy_from (race_count)");
done:
    if (ctx->allocated) dpu_free(ctx->set);
    return rc;
}
