/* liblivedlrm_pim: the small stable C ABI the C# engine calls (interop/LiveDlrm.Interop/Pim.cs), implemented once
 * over the UPMEM host API. Compiled against the real SDK (PIM_WITH_SDK, backend hw or simulator) or against the
 * project's emulation (native/pim/emu); this file is the same in both builds.
 *
 * Transfers follow the hardware: per-DPU buffers padded to 8 bytes and to one common length, one push of the
 * item lists per batch and one pull of the partial sums; the index lists were grouped per DPU by the caller;
 * the partial sums are reduced here, DPU by DPU in index order (a fixed summation order).
 *
 * Every function returns 0 or a negative pim_status; the reason is in pim_last_error() (per thread). Inputs are
 * validated completely before the first transfer, so a rejected call changes nothing on the DPUs. A context is
 * not thread-safe (the C# owner serialises calls).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dpu.h>

#include "pim_common.h"

#define PIM_API __attribute__((visibility("default")))

enum pim_status {
    PIM_OK = 0,
    PIM_E_ARGUMENT = -1,     /* bad input from the caller */
    PIM_E_DPU = -2,          /* the UPMEM runtime (or the emulation) reported an error */
    PIM_E_STATE = -3,        /* no table loaded, or a failed load left the context without one */
    PIM_E_MEMORY = -4,
    PIM_E_CAPACITY = -5,     /* does not fit MRAM / WRAM */
};

struct pim_ctx {
    struct dpu_set_t set;
    struct dpu_set_t *dpus;  /* one handle per DPU, index order */
    uint32_t nr_dpus;
    pim_backend backend;
    int loaded;
    uint64_t rows;
    uint32_t dim, slice_floats, slot_bytes, nr_tiles, nr_cache;
    uint32_t *nr_slots;      /* per DPU */
    uint8_t *stage;          /* nr_dpus * stage_each */
    size_t stage_each;
    pim_stats_t stats;
};

static __thread char last_error[1024];

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

static int dpu_failure(dpu_error_t err, const char *what)
{
    /* dpu_error_to_string's string is static in the emulation and in older SDKs, allocated in newer ones; not
     * freeing it costs a few bytes per error and is safe with both. */
    const char *text = dpu_error_to_string(err);
#ifdef PIM_EMULATED
    return set_error(PIM_E_DPU, "%s: %s: %s", what, text ? text : "?", dpu_emu_last_detail());
#else
    return set_error(PIM_E_DPU, "%s: %s (error %d)", what, text ? text : "?", (int)err);
#endif
}

#define DPU_CHECK(call, what)                                      \
    do {                                                           \
        dpu_error_t dpu_err_ = (call);                             \
        if (dpu_err_ != DPU_OK) { rc = dpu_failure(dpu_err_, what); goto done; } \
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
    PUT(sizeof(pim_table_args));
    PUT(sizeof(pim_batch_header)); PUT(offsetof(pim_batch_header, items_offset));
    PUT(sizeof(pim_segment));
    PUT(sizeof(pim_host_segment)); PUT(offsetof(pim_host_segment, tile)); PUT(offsetof(pim_host_segment, item_begin));
    PUT(offsetof(pim_host_segment, item_count));
    PUT(sizeof(pim_slot_desc)); PUT(offsetof(pim_slot_desc, row_b)); PUT(offsetof(pim_slot_desc, tile));
    PUT(offsetof(pim_slot_desc, dpu)); PUT(offsetof(pim_slot_desc, slot));
    PUT(sizeof(pim_stats_t)); PUT(offsetof(pim_stats_t, items)); PUT(offsetof(pim_stats_t, ns_host_reduce));
    PUT(offsetof(pim_stats_t, nr_dpus)); PUT(offsetof(pim_stats_t, backend));
    PUT(sizeof(pim_probe_args)); PUT(offsetof(pim_probe_args, wram_offset));
    PUT(PIM_MRAM_TABLE_BYTES); PUT(PIM_MRAM_IN_BYTES); PUT(PIM_MRAM_OUT_BYTES); PUT(PIM_MAX_SLICE_FLOATS);
    PUT(PIM_WRAM_CACHE_BYTES); PUT(PIM_ITEM_CACHE_BIT);
#undef PUT
    return n;
}

/* 0: built against the emulation, 1: built against the UPMEM SDK. */
PIM_API int pim_build_kind(void)
{
#ifdef PIM_EMULATED
    return 0;
#else
    return 1;
#endif
}

/* Most DPUs one context may hold in this build: the emulation's limit; with the SDK, UINT32_MAX (no limit of
 * ours; dpu_alloc reports what the machine lacks). */
PIM_API uint32_t pim_max_dpus(void)
{
#ifdef PIM_EMULATED
    return DPU_EMU_MAX_DPUS;
#else
    return UINT32_MAX;
#endif
}

/* ------------------------------------------------------------------------------------------ open / close */

PIM_API void pim_close(struct pim_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->set.set) dpu_free(ctx->set);
    free(ctx->dpus);
    free(ctx->nr_slots);
    free(ctx->stage);
    free(ctx);
}

/* Allocates nr_dpus DPUs with the UPMEM profile string (e.g. "" or "backend=simulator"; the emulated build
 * accepts "" and "backend=emulated") and loads the embedding kernel (kernel_path NULL: the one next to this
 * library). */
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
#ifdef PIM_EMULATED
    ctx->backend = PIM_BACKEND_EMULATED;
#else
    ctx->backend = profile && strstr(profile, "backend=simulator") ? PIM_BACKEND_SIMULATOR : PIM_BACKEND_HW;
#endif
    DPU_CHECK(dpu_alloc(nr_dpus, profile ? profile : "", &ctx->set), "dpu_alloc");
    uint32_t got = 0;
    DPU_CHECK(dpu_get_nr_dpus(ctx->set, &got), "dpu_get_nr_dpus");
    if (got != nr_dpus) { rc = set_error(PIM_E_CAPACITY, "asked for %u DPUs, the runtime gave %u", nr_dpus, got); goto done; }
    DPU_CHECK(dpu_load(ctx->set, path, NULL), "dpu_load");
    ctx->nr_dpus = nr_dpus;
    ctx->dpus = calloc(nr_dpus, sizeof *ctx->dpus);
    ctx->nr_slots = calloc(nr_dpus, sizeof *ctx->nr_slots);
    if (!ctx->dpus || !ctx->nr_slots) { rc = set_error(PIM_E_MEMORY, "pim_open: out of memory"); goto done; }
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

/* ------------------------------------------------------------------------------------------ table */

static int check_slot(const struct pim_ctx *ctx, uint64_t rows, const pim_slot_desc *s, const char *what, uint64_t i)
{
    if (s->row_a < 0 || (uint64_t)s->row_a >= rows)
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: row %lld outside [0, %llu)", what, (unsigned long long)i, (long long)s->row_a, (unsigned long long)rows);
    if (s->row_b != -1 && (s->row_b < 0 || (uint64_t)s->row_b >= rows))
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: pair row %lld outside [0, %llu)", what, (unsigned long long)i, (long long)s->row_b, (unsigned long long)rows);
    if (s->tile >= ctx->nr_tiles)
        return set_error(PIM_E_ARGUMENT, "%s[%llu]: column tile %u, the table has %u", what, (unsigned long long)i, s->tile, ctx->nr_tiles);
    return PIM_OK;
}

/* The stored vector of a slot: row_a (+ row_b) restricted to its column tile, zero past dim. */
static void fill_vector(const struct pim_ctx *ctx, const float *table, uint64_t row_stride, const pim_slot_desc *s, float *out)
{
    uint32_t c0 = s->tile * ctx->slice_floats;
    const float *a = table + (uint64_t)s->row_a * row_stride;
    const float *b = s->row_b >= 0 ? table + (uint64_t)s->row_b * row_stride : NULL;
    for (uint32_t j = 0; j < ctx->slice_floats; j++) {
        uint32_t c = c0 + j;
        out[j] = c < ctx->dim ? (b ? a[c] + b[c] : a[c]) : 0.0f;
    }
}

/* Loads one table: slots[] holds the stored vectors of DPU 0, then DPU 1, ... (slots_per_dpu[d] each), cache[]
 * the vectors replicated into every DPU's WRAM cache. table: rows x row_stride_floats fp32, dim used columns. */
PIM_API int pim_load_table(struct pim_ctx *ctx, const float *table, uint64_t rows, uint32_t dim, uint64_t row_stride_floats,
                           uint32_t slice_floats, const pim_slot_desc *slots, const uint32_t *slots_per_dpu,
                           const pim_slot_desc *cache, uint32_t nr_cache)
{
    if (!ctx || !table || !slots_per_dpu) return set_error(PIM_E_ARGUMENT, "pim_load_table: null argument");
    if (rows == 0 || dim == 0 || row_stride_floats < dim)
        return set_error(PIM_E_ARGUMENT, "pim_load_table: rows %llu, dim %u, row stride %llu floats is not a table",
                         (unsigned long long)rows, dim, (unsigned long long)row_stride_floats);
    if (slice_floats < 2 || slice_floats > PIM_MAX_SLICE_FLOATS || slice_floats % 2)
        return set_error(PIM_E_ARGUMENT, "pim_load_table: slice width %u floats must be even and in [2, %u] (8-byte DMA, one read per lookup)",
                         slice_floats, PIM_MAX_SLICE_FLOATS);
    /* Validate everything against the new geometry before touching the context. */
    struct pim_ctx probe = *ctx;
    probe.dim = dim;
    probe.slice_floats = slice_floats;
    probe.nr_tiles = (dim + slice_floats - 1) / slice_floats;
    uint32_t slot_bytes = slice_floats * 4;
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

    /* From here the old table is gone: a failure leaves the context without a table (lookups refuse). */
    ctx->loaded = 0;
    ctx->rows = rows;
    ctx->dim = dim;
    ctx->slice_floats = slice_floats;
    ctx->slot_bytes = slot_bytes;
    ctx->nr_tiles = probe.nr_tiles;
    ctx->nr_cache = nr_cache;
    int rc = PIM_OK;

    /* MRAM: in chunks of up to 1 MB per DPU, one push per chunk (all DPUs, one padded length). */
    uint32_t chunk_slots = (1u << 20) / slot_bytes;
    if ((rc = ensure_stage(ctx, (size_t)chunk_slots * slot_bytes)) != PIM_OK) return rc;
    uint64_t *first = calloc(ctx->nr_dpus, sizeof *first);
    if (!first) return set_error(PIM_E_MEMORY, "pim_load_table: out of memory");
    for (uint32_t d = 1; d < ctx->nr_dpus; d++) first[d] = first[d - 1] + slots_per_dpu[d - 1];
    for (uint64_t base = 0; base < max_slots; base += chunk_slots) {
        uint64_t n = max_slots - base < chunk_slots ? max_slots - base : chunk_slots;
        for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
            float *buf = (float *)(ctx->stage + d * ctx->stage_each);
            for (uint64_t k = 0; k < n; k++) {
                uint64_t s = base + k;
                if (s < slots_per_dpu[d]) fill_vector(ctx, table, row_stride_floats, &slots[first[d] + s], buf + k * slice_floats);
                else memset(buf + k * slice_floats, 0, slot_bytes);
            }
            DPU_CHECK(dpu_prepare_xfer(ctx->dpus[d], buf), "dpu_prepare_xfer (table)");
        }
        DPU_CHECK(dpu_push_xfer(ctx->set, DPU_XFER_TO_DPU, "pim_table", (uint32_t)(base * slot_bytes), n * slot_bytes, DPU_XFER_DEFAULT),
                  "dpu_push_xfer (table)");
        ctx->stats.bytes_to_dpu += n * slot_bytes * ctx->nr_dpus;
    }
    /* Per-DPU arguments (slot counts differ): one push. */
    if ((rc = ensure_stage(ctx, sizeof(pim_table_args))) != PIM_OK) goto done;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        pim_table_args *args = (pim_table_args *)(ctx->stage + d * ctx->stage_each);
        *args = (pim_table_args){ slice_floats, slot_bytes, slots_per_dpu[d], nr_cache };
        DPU_CHECK(dpu_prepare_xfer(ctx->dpus[d], args), "dpu_prepare_xfer (args)");
    }
    DPU_CHECK(dpu_push_xfer(ctx->set, DPU_XFER_TO_DPU, "pim_args", 0, sizeof(pim_table_args), DPU_XFER_DEFAULT), "dpu_push_xfer (args)");
    /* WRAM cache: the same vectors on every DPU, one broadcast. */
    if (nr_cache) {
        float *buf = calloc(nr_cache, slot_bytes);
        if (!buf) { rc = set_error(PIM_E_MEMORY, "pim_load_table: out of memory"); goto done; }
        for (uint32_t c = 0; c < nr_cache; c++) fill_vector(ctx, table, row_stride_floats, &cache[c], buf + (size_t)c * slice_floats);
        dpu_error_t err = dpu_broadcast_to(ctx->set, "pim_cache", 0, buf, (size_t)nr_cache * slot_bytes, DPU_XFER_DEFAULT);
        free(buf);
        if (err != DPU_OK) { rc = dpu_failure(err, "dpu_broadcast_to (cache)"); goto done; }
        ctx->stats.bytes_to_dpu += (uint64_t)nr_cache * slot_bytes * ctx->nr_dpus;
    }
    memcpy(ctx->nr_slots, slots_per_dpu, ctx->nr_dpus * sizeof *slots_per_dpu);
    ctx->loaded = 1;
done:
    free(first);
    return rc;
}

/* Rewrites stored vectors after rows changed (e.g. LoRA merges): each write names a DPU and slot (or
 * PIM_ALL_DPUS and a cache index) and what the slot holds; the vector is rebuilt from table. */
PIM_API int pim_update_rows(struct pim_ctx *ctx, const float *table, uint64_t rows, uint64_t row_stride_floats,
                            const pim_slot_desc *writes, uint32_t nr_writes)
{
    if (!ctx || (nr_writes && (!table || !writes))) return set_error(PIM_E_ARGUMENT, "pim_update_rows: null argument");
    if (!ctx->loaded) return set_error(PIM_E_STATE, "pim_update_rows: no table is loaded");
    if (rows != ctx->rows || row_stride_floats < ctx->dim)
        return set_error(PIM_E_ARGUMENT, "pim_update_rows: table of %llu rows (stride %llu) does not match the loaded %llu x %u",
                         (unsigned long long)rows, (unsigned long long)row_stride_floats, (unsigned long long)ctx->rows, ctx->dim);
    for (uint32_t i = 0; i < nr_writes; i++) {
        int rc = check_slot(ctx, rows, &writes[i], "writes", i);
        if (rc) return rc;
        if (writes[i].dpu == PIM_ALL_DPUS) {
            if (writes[i].slot >= ctx->nr_cache)
                return set_error(PIM_E_ARGUMENT, "writes[%u]: cache slot %u, the cache holds %u", i, writes[i].slot, ctx->nr_cache);
        } else if (writes[i].dpu >= ctx->nr_dpus)
            return set_error(PIM_E_ARGUMENT, "writes[%u]: DPU %u, the context has %u", i, writes[i].dpu, ctx->nr_dpus);
        else if (writes[i].slot >= ctx->nr_slots[writes[i].dpu])
            return set_error(PIM_E_ARGUMENT, "writes[%u]: slot %u, DPU %u holds %u", i, writes[i].slot, writes[i].dpu, ctx->nr_slots[writes[i].dpu]);
    }
    int rc = PIM_OK;
    float vec[PIM_MAX_SLICE_FLOATS] __attribute__((aligned(8)));
    for (uint32_t i = 0; i < nr_writes; i++) {
        fill_vector(ctx, table, row_stride_floats, &writes[i], vec);
        uint32_t offset = writes[i].slot * ctx->slot_bytes;
        if (writes[i].dpu == PIM_ALL_DPUS) {
            DPU_CHECK(dpu_broadcast_to(ctx->set, "pim_cache", offset, vec, ctx->slot_bytes, DPU_XFER_DEFAULT), "dpu_broadcast_to (cache row)");
            ctx->stats.bytes_to_dpu += (uint64_t)ctx->slot_bytes * ctx->nr_dpus;
        } else {
            DPU_CHECK(dpu_copy_to(ctx->dpus[writes[i].dpu], "pim_table", offset, vec, ctx->slot_bytes), "dpu_copy_to (row)");
            ctx->stats.bytes_to_dpu += ctx->slot_bytes;
        }
    }
done:
    if (rc != PIM_OK) ctx->loaded = 0; /* some slots may be stale: refuse lookups until reloaded */
    return rc;
}

/* ------------------------------------------------------------------------------------------ lookup */

/* One batch. For DPU d: segs_per_dpu[d] segments (concatenated in DPU order in segs) over its items
 * (items_per_dpu[d] entries, concatenated in DPU order; segment item_begin is relative to the DPU's block).
 * output: nr_bags x dim floats, overwritten with the sums (Σ over all DPUs' partials). */
PIM_API int pim_lookup(struct pim_ctx *ctx, const pim_host_segment *segs, const uint32_t *segs_per_dpu,
                       const uint32_t *items, const float *weights, const uint32_t *items_per_dpu, uint32_t nr_bags,
                       float *output, uint64_t output_floats)
{
    if (!ctx || !segs_per_dpu || !items_per_dpu || (nr_bags && !output)) return set_error(PIM_E_ARGUMENT, "pim_lookup: null argument");
    if (!ctx->loaded) return set_error(PIM_E_STATE, "pim_lookup: no table is loaded (or the last load/update failed)");
    if (output_floats < (uint64_t)nr_bags * ctx->dim)
        return set_error(PIM_E_ARGUMENT, "pim_lookup: output holds %llu floats, %u bags x dim %u need more",
                         (unsigned long long)output_floats, nr_bags, ctx->dim);
    uint64_t t0 = now_ns();
    /* Validate and size every DPU's buffer first. */
    size_t in_len = 0, out_len = 0;
    uint64_t seg_base = 0, item_base = 0, nr_items = 0, cache_items = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint64_t padded = 0;
        for (uint32_t s = 0; s < segs_per_dpu[d]; s++) {
            const pim_host_segment *g = &segs[seg_base + s];
            if (g->bag >= nr_bags || g->tile >= ctx->nr_tiles || (uint64_t)g->item_begin + g->item_count > items_per_dpu[d])
                return set_error(PIM_E_ARGUMENT, "pim_lookup: DPU %u segment %u (bag %u, tile %u, items %u+%u) outside %u bags, %u tiles, %u items",
                                 d, s, g->bag, g->tile, g->item_begin, g->item_count, nr_bags, ctx->nr_tiles, items_per_dpu[d]);
            padded += (g->item_count + 1) & ~1u;
        }
        for (uint32_t k = 0; k < items_per_dpu[d]; k++) {
            uint32_t it = items[item_base + k];
            int cached = (it & PIM_ITEM_CACHE_BIT) != 0;
            uint32_t idx = it & ~PIM_ITEM_CACHE_BIT;
            if (cached ? idx >= ctx->nr_cache : idx >= ctx->nr_slots[d])
                return set_error(PIM_E_ARGUMENT, "pim_lookup: DPU %u item %u names %s %u, which holds %u", d, k,
                                 cached ? "cache vector" : "slot", idx, cached ? ctx->nr_cache : ctx->nr_slots[d]);
        }
        size_t items_offset = round8(sizeof(pim_batch_header) + (size_t)segs_per_dpu[d] * sizeof(pim_segment));
        size_t len = round8(items_offset + (padded + 1) * sizeof(uint32_t));
        if (weights) len = round8(len + (padded + 1) * sizeof(float));
        size_t olen = (size_t)segs_per_dpu[d] * ctx->slot_bytes;
        if (len > PIM_MRAM_IN_BYTES || olen > PIM_MRAM_OUT_BYTES)
            return set_error(PIM_E_CAPACITY, "pim_lookup: DPU %u needs %zu B of input and %zu B of output, the MRAM regions hold %u and %u: split the batch",
                             d, len, olen, PIM_MRAM_IN_BYTES, PIM_MRAM_OUT_BYTES);
        if (len > in_len) in_len = len;
        if (olen > out_len) out_len = olen;
        seg_base += segs_per_dpu[d];
        item_base += items_per_dpu[d];
    }
    nr_items = item_base;
    int rc = ensure_stage(ctx, in_len > out_len ? in_len : out_len);
    if (rc) return rc;

    /* Pack: header, segments, item lists (each segment from an even index, padded). */
    seg_base = item_base = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        uint8_t *buf = ctx->stage + d * ctx->stage_each;
        memset(buf, 0, in_len);
        size_t items_offset = round8(sizeof(pim_batch_header) + (size_t)segs_per_dpu[d] * sizeof(pim_segment));
        pim_segment *dsegs = (pim_segment *)(buf + sizeof(pim_batch_header));
        uint32_t *ditems = (uint32_t *)(buf + items_offset);
        uint32_t padded = 0;
        for (uint32_t s = 0; s < segs_per_dpu[d]; s++) padded += (segs[seg_base + s].item_count + 1) & ~1u;
        /* Weights after the items (and their one spare padding item), 8-byte aligned, same indices as the items. */
        size_t weights_offset = weights ? round8(items_offset + ((size_t)padded + 1) * sizeof(uint32_t)) : 0;
        float *dweights = weights ? (float *)(buf + weights_offset) : NULL;
        uint32_t at = 0;
        for (uint32_t s = 0; s < segs_per_dpu[d]; s++) {
            const pim_host_segment *g = &segs[seg_base + s];
            dsegs[s] = (pim_segment){ at, g->item_count };
            for (uint32_t k = 0; k < g->item_count; k++) {
                uint32_t it = items[item_base + g->item_begin + k];
                cache_items += (it & PIM_ITEM_CACHE_BIT) != 0;
                ditems[at + k] = it;
                if (dweights) dweights[at + k] = weights[item_base + g->item_begin + k];
            }
            at += (g->item_count + 1) & ~1u;
        }
        *(pim_batch_header *)buf = (pim_batch_header){ segs_per_dpu[d], at, (uint32_t)items_offset, (uint32_t)weights_offset };
        DPU_CHECK(dpu_prepare_xfer(ctx->dpus[d], buf), "dpu_prepare_xfer (batch)");
        seg_base += segs_per_dpu[d];
        item_base += items_per_dpu[d];
    }
    DPU_CHECK(dpu_push_xfer(ctx->set, DPU_XFER_TO_DPU, "pim_in", 0, in_len, DPU_XFER_DEFAULT), "dpu_push_xfer (batch)");
    uint64_t t1 = now_ns();
    DPU_CHECK(dpu_launch(ctx->set, DPU_SYNCHRONOUS), "dpu_launch");
    uint64_t t2 = now_ns();
    if (out_len) {
        for (uint32_t d = 0; d < ctx->nr_dpus; d++) DPU_CHECK(dpu_prepare_xfer(ctx->dpus[d], ctx->stage + d * ctx->stage_each), "dpu_prepare_xfer (partials)");
        DPU_CHECK(dpu_push_xfer(ctx->set, DPU_XFER_FROM_DPU, "pim_out", 0, out_len, DPU_XFER_DEFAULT), "dpu_push_xfer (partials)");
    }
    uint64_t t3 = now_ns();

    /* Reduce: DPU 0 first, then 1, ...; within a DPU its segments in order. */
    memset(output, 0, (size_t)nr_bags * ctx->dim * sizeof(float));
    seg_base = 0;
    for (uint32_t d = 0; d < ctx->nr_dpus; d++) {
        const float *partials = (const float *)(ctx->stage + d * ctx->stage_each);
        for (uint32_t s = 0; s < segs_per_dpu[d]; s++) {
            const pim_host_segment *g = &segs[seg_base + s];
            uint32_t c0 = g->tile * ctx->slice_floats;
            uint32_t width = ctx->dim - c0 < ctx->slice_floats ? ctx->dim - c0 : ctx->slice_floats;
            float *o = output + (size_t)g->bag * ctx->dim + c0;
            const float *p = partials + (size_t)s * ctx->slice_floats;
            for (uint32_t j = 0; j < width; j++) o[j] += p[j];
        }
        seg_base += segs_per_dpu[d];
    }
    uint64_t t4 = now_ns();
    ctx->stats.batches++;
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
    return rc;
}

PIM_API int pim_stats(const struct pim_ctx *ctx, pim_stats_t *out)
{
    if (!ctx || !out) return set_error(PIM_E_ARGUMENT, "pim_stats: null argument");
    *out = ctx->stats;
    return PIM_OK;
}

/* ------------------------------------------------------------------------------------------ test probes */

/* Loads a test kernel (kernel_path) on one DPU and, when args is given, writes probe_args and launches it.
 * For the tests of the emulation's DMA-rule and WRAM-budget enforcement. */
PIM_API int pim_run_probe(const char *kernel_path, const char *profile, const pim_probe_args *args)
{
    if (!kernel_path) return set_error(PIM_E_ARGUMENT, "pim_run_probe: null kernel path");
    struct dpu_set_t set = { 0 };
    int rc = PIM_OK, allocated = 0;
    DPU_CHECK(dpu_alloc(1, profile ? profile : "", &set), "dpu_alloc");
    allocated = 1;
    DPU_CHECK(dpu_load(set, kernel_path, NULL), "dpu_load");
    if (args) {
        pim_probe_args copy = *args;
        DPU_CHECK(dpu_copy_to(set, "probe_args", 0, &copy, sizeof copy), "dpu_copy_to (probe_args)");
        DPU_CHECK(dpu_launch(set, DPU_SYNCHRONOUS), "dpu_launch");
    }
done:
    if (allocated) dpu_free(set);
    return rc;
}
