/* The project's emulation of the UPMEM DPU runtime and of the host API of SDK 2025.1 (<dpu.h>) that native/pim uses
 * (design: docs/pim.md).
 *
 * - Each DPU: 64 MB MRAM reserved with mmap(MAP_NORESERVE) (pages are committed only when written), a WRAM image
 *   laid out as [kernel WRAM globals][runtime][NR_TASKLETS stacks (budget only)][mem_alloc heap], checked against
 *   the selected chip's WRAM (v1A 64 KB, v1B 62 KB).
 * - A launch runs the DPUs of the set one after another (kernel globals live in one ELF section, see
 *   <attributes.h>); the tasklets of a DPU are coroutines, switching at barrier_wait, a contended mutex, the end of
 *   main and, in the randomised mode (profile emuYield=SEED), at random DMA transfers in a random order.
 * - mram_read/mram_write enforce the DMA rules and the per-tasklet stack budget; a violation faults the DPU, the
 *   launch returns DPU_ERR_DPU_FAULT and dpu_log_read on that DPU prints the diagnosis.
 */
#define _GNU_SOURCE
#include <dpu.h>

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "dpu_emu_kernel.h"
/* The runtime itself is no kernel; it includes the DPU-side headers for their types only. */
#define DPU_EMU_KERNEL dpu_emu_runtime
#include <barrier.h>
#include <mutex.h>
#include <defs.h>
#include <mram.h>
#include <alloc.h>
#include <perfcounter.h>

#define EMU_HOST_STACK_BYTES (64u << 10)   /* host stack of one tasklet coroutine (not the DPU's stack) */
/* DMA cost of the model (docs/pim.md, PimCostModel): alpha + beta x bytes cycles. */
#define EMU_DMA_ALPHA_READ 77u
#define EMU_DMA_ALPHA_WRITE 61u

struct dpu_emu_set;

struct dpu_t {
    struct dpu_emu_set *set;
    uint32_t index;
    uint8_t *mram;
    uint8_t *wram;               /* DPU_EMU_WRAM_IMAGE_BYTES, 8-aligned */
    void *xfer_buffer;           /* dpu_prepare_xfer */
    bool faulted;                /* the last launch faulted on this DPU */
    char fault[512];             /* and why (what dpu_log_read prints) */
};

struct dpu_rank_t {
    struct dpu_emu_set *set;
    uint32_t first, count;
};

/* Chip generations: WRAM, hardware threads. */
struct emu_chip { const char *name; uint32_t wram_bytes; uint32_t max_tasklets; };
static const struct emu_chip chip_v1a = { "v1A", 65536u, 24u };
static const struct emu_chip chip_v1b = { "v1B", 63488u, 16u };

struct dpu_emu_set {
    uint32_t nr_dpus;
    struct dpu_t *dpus;
    uint32_t nr_ranks;
    struct dpu_rank_t *rank_storage;
    struct dpu_rank_t **ranks;
    struct dpu_emu_kernel *kernel;
    const struct emu_chip *chip;
    uint64_t yield_seed;         /* 0: deterministic scheduling */
    size_t globals_bytes;        /* kernel WRAM section, rounded to 8 */
    size_t heap_offset;          /* first heap byte inside WRAM */
};

static struct dpu_emu_kernel *kernels;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t dpus_in_use;
/* Kernel globals are process-wide sections: one launch (or WRAM symbol access) at a time. */
static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread char last_detail[512];
static __thread dpu_error_t last_detail_error;

static dpu_error_t fail(dpu_error_t err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dpu_error_t fail(dpu_error_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_detail, sizeof last_detail, fmt, ap);
    va_end(ap);
    last_detail_error = err;
    return err;
}

void dpu_emu_register_kernel(struct dpu_emu_kernel *kernel)
{
    size_t n = (size_t)(kernel->wram_stop - kernel->wram_start);
    kernel->wram_initial = n ? malloc(n) : NULL;
    if (n && kernel->wram_initial) memcpy(kernel->wram_initial, kernel->wram_start, n);
    pthread_mutex_lock(&registry_lock);
    kernel->next = kernels;
    kernels = kernel;
    pthread_mutex_unlock(&registry_lock);
}

static const char *error_text(dpu_error_t status)
{
    switch (status) {
    case DPU_OK: return "success";
    case DPU_ERR_INTERNAL: return "internal error";
    case DPU_ERR_SYSTEM: return "system error";
    case DPU_ERR_ALLOCATION: return "cannot allocate DPUs";
    case DPU_ERR_INVALID_DPU_SET: return "invalid DPU set for this operation";
    case DPU_ERR_INVALID_WRAM_ACCESS: return "invalid WRAM access";
    case DPU_ERR_INVALID_MRAM_ACCESS: return "invalid MRAM access";
    case DPU_ERR_INVALID_SYMBOL_ACCESS: return "invalid symbol access";
    case DPU_ERR_TRANSFER_ALREADY_SET: return "a transfer buffer is already prepared for this DPU";
    case DPU_ERR_INVALID_MEMORY_TRANSFER: return "invalid memory transfer";
    case DPU_ERR_DPU_FAULT: return "DPU is in fault";
    case DPU_ERR_ELF_INVALID_FILE: return "invalid DPU program file";
    case DPU_ERR_ELF_NO_SUCH_FILE: return "no such DPU program file";
    case DPU_ERR_NO_PROGRAM_LOADED: return "no program loaded";
    case DPU_ERR_INVALID_PROFILE: return "invalid profile";
    case DPU_ERR_UNKNOWN_SYMBOL: return "unknown symbol";
    case DPU_ERR_INVALID_LAUNCH_POLICY: return "invalid launch policy";
    case DPU_ERR_TOO_MANY_TASKLETS: return "the program uses more tasklets than the DPU has threads";
    default: return "error";
    }
}

/* Allocated, as in SDK 2025.1; carries the emulation's detail of the last error of that code on this thread (a
 * DPU fault's detail is in dpu_log_read, as on hardware). */
char *dpu_error_to_string(dpu_error_t status)
{
    const char *text = error_text(status);
    bool detail = status != DPU_ERR_DPU_FAULT && last_detail_error == status && last_detail[0];
    size_t n = strlen(text) + (detail ? strlen(last_detail) + 3 : 0) + 1;
    char *s = malloc(n);
    if (!s) return NULL;
    snprintf(s, n, detail ? "%s: %s" : "%s", text, detail ? last_detail : "");
    return s;
}

/* ---------------------------------------------------------------------------------------------- host: sets */

struct profile { const struct emu_chip *chip; uint64_t yield_seed; };

static dpu_error_t parse_profile(const char *text, struct profile *p)
{
    p->chip = &chip_v1b;
    p->yield_seed = 0;
    if (!text || !*text) return DPU_OK;
    char buf[256];
    if (strlen(text) >= sizeof buf) return fail(DPU_ERR_INVALID_PROFILE, "profile too long");
    strcpy(buf, text);
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return fail(DPU_ERR_INVALID_PROFILE, "profile entry '%s' is not key=value", kv);
        *eq = 0;
        const char *key = kv, *value = eq + 1;
        if (strcmp(key, "backend") == 0) {
            if (strcmp(value, "emulated") != 0)
                return fail(DPU_ERR_INVALID_PROFILE,
                            "backend=%s is not available: this liblivedlrm_pim was built against the project's "
                            "emulation (the UPMEM SDK was not found at build time); use backend=emulated", value);
        } else if (strcmp(key, "emuChip") == 0) {
            if (strcmp(value, "v1A") == 0) p->chip = &chip_v1a;
            else if (strcmp(value, "v1B") == 0) p->chip = &chip_v1b;
            else return fail(DPU_ERR_INVALID_PROFILE, "emuChip=%s: the emulation knows v1A and v1B", value);
        } else if (strcmp(key, "emuYield") == 0) {
            char *end = NULL;
            unsigned long long seed = strtoull(value, &end, 10);
            if (!*value || *end || seed == 0) return fail(DPU_ERR_INVALID_PROFILE, "emuYield=%s: a positive integer seed", value);
            p->yield_seed = seed;
        } else
            return fail(DPU_ERR_INVALID_PROFILE, "the emulation knows no profile key '%s' (backend=emulated, emuChip=v1A|v1B, emuYield=SEED)", key);
    }
    return DPU_OK;
}

static struct dpu_set_t whole_set(struct dpu_emu_set *set)
{
    struct dpu_set_t s;
    memset(&s, 0, sizeof s);
    s.kind = DPU_SET_RANKS;
    s.list.nr_ranks = set->nr_ranks;
    s.list.ranks = set->ranks;
    return s;
}

/* The emulated set behind a set value, and the DPUs it names as [first, first + count). */
static struct dpu_emu_set *resolve(struct dpu_set_t s, uint32_t *first, uint32_t *count)
{
    if (s.kind == DPU_SET_DPU) {
        if (!s.dpu) return NULL;
        *first = s.dpu->index;
        *count = 1;
        return s.dpu->set;
    }
    if (s.kind != DPU_SET_RANKS || s.list.nr_ranks == 0 || !s.list.ranks || !s.list.ranks[0]) return NULL;
    struct dpu_emu_set *set = s.list.ranks[0]->set;
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t r = 0; r < s.list.nr_ranks; r++) {
        struct dpu_rank_t *rank = s.list.ranks[r];
        if (!rank || rank->set != set) return NULL;
        if (rank->first < lo) lo = rank->first;
        if (rank->first + rank->count > hi) hi = rank->first + rank->count;
    }
    *first = lo;
    *count = hi - lo;
    return set;
}

static dpu_error_t alloc_set(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set)
{
    if (!dpu_set) return fail(DPU_ERR_INTERNAL, "dpu_alloc: null set");
    struct profile p;
    dpu_error_t err = parse_profile(profile, &p);
    if (err != DPU_OK) return err;
    pthread_mutex_lock(&registry_lock);
    uint32_t available = DPU_EMU_MAX_DPUS - dpus_in_use;
    if (nr_dpus == DPU_ALLOCATE_ALL) nr_dpus = available;
    if (nr_dpus == 0 || nr_dpus > available) {
        pthread_mutex_unlock(&registry_lock);
        return fail(DPU_ERR_ALLOCATION, "cannot allocate %u DPUs: the emulation provides at most %u per process and %u are free",
                    nr_dpus, DPU_EMU_MAX_DPUS, available);
    }
    dpus_in_use += nr_dpus;
    pthread_mutex_unlock(&registry_lock);

    uint32_t nr_ranks = (nr_dpus + DPU_EMU_DPUS_PER_RANK - 1) / DPU_EMU_DPUS_PER_RANK;
    struct dpu_emu_set *set = calloc(1, sizeof *set);
    struct dpu_t *dpus = calloc(nr_dpus, sizeof *dpus);
    struct dpu_rank_t *ranks = calloc(nr_ranks, sizeof *ranks);
    struct dpu_rank_t **rank_ptrs = calloc(nr_ranks, sizeof *rank_ptrs);
    if (!set || !dpus || !ranks || !rank_ptrs) { free(dpus); free(ranks); free(rank_ptrs); goto oom; }
    set->nr_dpus = nr_dpus;
    set->dpus = dpus;
    set->nr_ranks = nr_ranks;
    set->rank_storage = ranks;
    set->ranks = rank_ptrs;
    set->chip = p.chip;
    set->yield_seed = p.yield_seed;
    for (uint32_t r = 0; r < nr_ranks; r++) {
        ranks[r] = (struct dpu_rank_t){ set, r * DPU_EMU_DPUS_PER_RANK, 0 };
        uint32_t left = nr_dpus - ranks[r].first;
        ranks[r].count = left < DPU_EMU_DPUS_PER_RANK ? left : DPU_EMU_DPUS_PER_RANK;
        rank_ptrs[r] = &ranks[r];
    }
    for (uint32_t i = 0; i < nr_dpus; i++) {
        dpus[i].set = set;
        dpus[i].index = i;
        void *m = mmap(NULL, DPU_EMU_MRAM_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) goto oom;
        dpus[i].mram = m;
        if (posix_memalign((void **)&dpus[i].wram, 64, DPU_EMU_WRAM_IMAGE_BYTES) != 0) { dpus[i].wram = NULL; goto oom; }
        memset(dpus[i].wram, 0, DPU_EMU_WRAM_IMAGE_BYTES);
    }
    *dpu_set = whole_set(set);
    return DPU_OK;
oom:
    if (set && set->dpus) dpu_free(whole_set(set));
    else {
        free(set);
        pthread_mutex_lock(&registry_lock);
        dpus_in_use -= nr_dpus;
        pthread_mutex_unlock(&registry_lock);
    }
    return fail(DPU_ERR_ALLOCATION, "cannot allocate %u emulated DPUs: out of memory or address space (%s)", nr_dpus, strerror(errno));
}

dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set)
{
    return alloc_set(nr_dpus, profile, dpu_set);
}

dpu_error_t dpu_alloc_ranks(uint32_t nr_ranks, const char *profile, struct dpu_set_t *dpu_set)
{
    if (nr_ranks == DPU_ALLOCATE_ALL) return alloc_set(DPU_ALLOCATE_ALL, profile, dpu_set);
    if (nr_ranks == 0 || nr_ranks > DPU_EMU_MAX_DPUS / DPU_EMU_DPUS_PER_RANK)
        return fail(DPU_ERR_ALLOCATION, "cannot allocate %u ranks: the emulation provides at most %u", nr_ranks, DPU_EMU_MAX_DPUS / DPU_EMU_DPUS_PER_RANK);
    return alloc_set(nr_ranks * DPU_EMU_DPUS_PER_RANK, profile, dpu_set);
}

dpu_error_t dpu_free(struct dpu_set_t dpu_set)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set || dpu_set.kind != DPU_SET_RANKS || count != set->nr_dpus) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_free needs the whole allocated set");
    for (uint32_t i = 0; i < set->nr_dpus; i++) {
        if (set->dpus[i].mram) munmap(set->dpus[i].mram, DPU_EMU_MRAM_BYTES);
        free(set->dpus[i].wram);
    }
    pthread_mutex_lock(&registry_lock);
    dpus_in_use -= set->nr_dpus;
    pthread_mutex_unlock(&registry_lock);
    free(set->dpus);
    free(set->rank_storage);
    free(set->ranks);
    free(set);
    return DPU_OK;
}

dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus)
{
    uint32_t first, count;
    if (!resolve(dpu_set, &first, &count)) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_get_nr_dpus: no set");
    *nr_dpus = count;
    return DPU_OK;
}

dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks)
{
    uint32_t first, count;
    if (!resolve(dpu_set, &first, &count)) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_get_nr_ranks: no set");
    *nr_ranks = dpu_set.kind == DPU_SET_DPU ? 1 : dpu_set.list.nr_ranks;
    return DPU_OK;
}

/* Iterators: "count" is the index of "next" in the set, as DPU_FOREACH(set, dpu, i) expects. */
struct dpu_set_rank_iterator_t dpu_set_rank_iterator_from(struct dpu_set_t *set)
{
    struct dpu_set_rank_iterator_t it;
    memset(&it, 0, sizeof it);
    it.set = set;
    dpu_set_rank_iterator_next(&it);
    it.count = 0;
    return it;
}

void dpu_set_rank_iterator_next(struct dpu_set_rank_iterator_t *it)
{
    if (it->next_idx > 0) it->count++;
    memset(&it->next, 0, sizeof it->next);
    it->has_next = false;
    if (it->set->kind == DPU_SET_DPU) {
        if (it->next_idx == 0) { it->next = *it->set; it->has_next = true; }
    } else if (it->next_idx < it->set->list.nr_ranks) {
        it->next.kind = DPU_SET_RANKS;
        it->next.list.nr_ranks = 1;
        it->next.list.ranks = &it->set->list.ranks[it->next_idx];
        it->has_next = true;
    }
    it->next_idx++;
}

struct dpu_set_dpu_iterator_t dpu_set_dpu_iterator_from(struct dpu_set_t *set)
{
    struct dpu_set_dpu_iterator_t it;
    memset(&it, 0, sizeof it);
    it.rank_iterator.set = set;
    dpu_set_dpu_iterator_next(&it);
    it.count = 0;
    return it;
}

void dpu_set_dpu_iterator_next(struct dpu_set_dpu_iterator_t *it)
{
    if (it->next_idx > 0) it->count++;
    memset(&it->next, 0, sizeof it->next);
    uint32_t first = 0, count = 0;
    struct dpu_emu_set *set = resolve(*it->rank_iterator.set, &first, &count);
    it->has_next = set && it->next_idx < count;
    if (it->has_next) {
        it->next.kind = DPU_SET_DPU;
        it->next.dpu = &set->dpus[first + it->next_idx];
    }
    it->next_idx++;
}

/* ------------------------------------------------------------------------------------------ host: programs */

static struct dpu_emu_kernel *find_kernel(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    struct dpu_emu_kernel *k = kernels;
    while (k && strcmp(k->name, name) != 0) k = k->next;
    pthread_mutex_unlock(&registry_lock);
    return k;
}

/* An emulated "DPU binary" is a small text file written by the build: "LIVEDLRM-DPU-EMU kernel=<name>". It keeps
 * the host code identical to the SDK path (a binary file is loaded by path) while the code is compiled in. The
 * limits the DPU linker and loader enforce are checked here: tasklets, WRAM (globals + runtime + stacks) and
 * MRAM arrays. */
dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program)
{
    if (program) *program = NULL;
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set || count != set->nr_dpus) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_load: the emulation loads whole sets");
    FILE *f = binary_path ? fopen(binary_path, "r") : NULL;
    if (!f) return fail(DPU_ERR_ELF_NO_SUCH_FILE, "DPU program '%s': %s", binary_path ? binary_path : "(null)", strerror(errno));
    char line[256] = { 0 }, name[128] = { 0 };
    bool ok = fgets(line, sizeof line, f) && sscanf(line, "LIVEDLRM-DPU-EMU kernel=%127s", name) == 1;
    fclose(f);
    if (!ok) return fail(DPU_ERR_ELF_INVALID_FILE, "DPU program '%s' is not an emulated kernel descriptor (a real DPU ELF needs the UPMEM SDK build)", binary_path);
    struct dpu_emu_kernel *k = find_kernel(name);
    if (!k) return fail(DPU_ERR_ELF_INVALID_FILE, "DPU program '%s' names kernel '%s', which this library does not contain", binary_path, name);

    const struct emu_chip *chip = set->chip;
    size_t globals = ((size_t)(k->wram_stop - k->wram_start) + 7) & ~(size_t)7;
    size_t stacks = (size_t)k->nr_tasklets * k->stack_size;
    size_t mram = (size_t)(k->mram_stop - k->mram_start);
    if (k->nr_tasklets == 0 || k->nr_tasklets > chip->max_tasklets)
        return fail(DPU_ERR_TOO_MANY_TASKLETS, "kernel '%s' was built with NR_TASKLETS=%u; a %s DPU runs 1..%u tasklets",
                    k->name, k->nr_tasklets, chip->name, chip->max_tasklets);
    if (globals + DPU_EMU_RUNTIME_WRAM_BYTES + stacks > chip->wram_bytes)
        return fail(DPU_ERR_ELF_INVALID_FILE,
                    "kernel '%s' does not fit %s WRAM: globals %zu B + runtime %u B + %u tasklets x %u B stack = %zu B > %u B",
                    k->name, chip->name, globals, DPU_EMU_RUNTIME_WRAM_BYTES, k->nr_tasklets, k->stack_size,
                    globals + DPU_EMU_RUNTIME_WRAM_BYTES + stacks, chip->wram_bytes);
    if (mram > DPU_EMU_MRAM_BYTES)
        return fail(DPU_ERR_ELF_INVALID_FILE, "kernel '%s' declares %zu B of MRAM arrays, a DPU has %u B", k->name, mram, DPU_EMU_MRAM_BYTES);
    set->kernel = k;
    set->globals_bytes = globals;
    set->heap_offset = globals + DPU_EMU_RUNTIME_WRAM_BYTES + stacks;
    for (uint32_t i = 0; i < set->nr_dpus; i++) {
        memset(set->dpus[i].wram, 0, DPU_EMU_WRAM_IMAGE_BYTES);
        if (k->wram_initial) memcpy(set->dpus[i].wram, k->wram_initial, (size_t)(k->wram_stop - k->wram_start));
        set->dpus[i].faulted = false;
        set->dpus[i].xfer_buffer = NULL;
    }
    return DPU_OK;
}

/* --------------------------------------------------------------------------------------- host: transfers */

struct symbol { uint8_t *(*at)(struct dpu_t *, size_t); size_t offset, size; bool mram; };

static uint8_t *wram_at(struct dpu_t *d, size_t off) { return d->wram + off; }
static uint8_t *mram_at(struct dpu_t *d, size_t off) { return d->mram + off; }

static dpu_error_t find_symbol(struct dpu_emu_set *set, const char *name, struct symbol *out)
{
    struct dpu_emu_kernel *k = set->kernel;
    if (!k) return fail(DPU_ERR_NO_PROGRAM_LOADED, "symbol '%s': no program loaded on the set", name);
    /* Kernel globals are exported symbols of this library: look the name up in it, then accept the address
     * only if it lies in this kernel's WRAM or MRAM section. */
    Dl_info info;
    void *self = NULL;
    if (dladdr((void *)&dpu_alloc, &info) && info.dli_fname) self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!self) return fail(DPU_ERR_INTERNAL, "cannot reopen the emulation library to look up '%s'", name);
    ElfW(Sym) *sym = NULL;
    void *addr = dlsym(self, name);
    /* The symbol's size: dladdr1 on addr + 1 so that zero-size linker symbols at the same address (the
     * __start_ of the section) cannot be picked instead; a 1-byte object falls back to the exact address. */
    bool found = addr && ((dladdr1((char *)addr + 1, &info, (void **)&sym, RTLD_DL_SYMENT) && sym && info.dli_sname &&
                           strcmp(info.dli_sname, name) == 0) ||
                          (dladdr1(addr, &info, (void **)&sym, RTLD_DL_SYMENT) && sym && info.dli_sname &&
                           strcmp(info.dli_sname, name) == 0));
    dlclose(self);
    char *a = addr;
    if (found && a >= k->wram_start && a < k->wram_stop) {
        *out = (struct symbol){ wram_at, (size_t)(a - k->wram_start), sym->st_size, false };
        return DPU_OK;
    }
    if (found && a >= k->mram_start && a < k->mram_stop) {
        *out = (struct symbol){ mram_at, (size_t)(a - k->mram_start), sym->st_size, true };
        return DPU_OK;
    }
    return fail(DPU_ERR_UNKNOWN_SYMBOL, "kernel '%s' has no __host or __mram_noinit symbol '%s'", k->name, name);
}

static dpu_error_t check_range(struct dpu_emu_set *set, const char *name, const struct symbol *s, uint32_t offset, size_t length)
{
    if ((uint64_t)offset + length > s->size)
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "kernel '%s' symbol '%s' (%zu B): access at offset %u of %zu B runs past its end",
                    set->kernel->name, name, s->size, offset, length);
    /* Host<->MRAM transfers move whole 8-byte words; WRAM 4-byte words. */
    size_t align = s->mram ? 8 : 4;
    if (offset % align || length % align)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "kernel '%s' symbol '%s': offset %u and length %zu must be multiples of %zu",
                    set->kernel->name, name, offset, length, align);
    return DPU_OK;
}

/* A buffer stays prepared until a push consumes it; preparing again first is an error (as on hardware), and a
 * NULL buffer clears what was prepared. */
dpu_error_t dpu_prepare_xfer(struct dpu_set_t dpu_set, void *buffer)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_prepare_xfer: no set");
    if (buffer)
        for (uint32_t i = first; i < first + count; i++)
            if (set->dpus[i].xfer_buffer)
                return fail(DPU_ERR_TRANSFER_ALREADY_SET, "dpu_prepare_xfer: DPU %u already has a prepared buffer (push it or prepare NULL first)", i);
    for (uint32_t i = first; i < first + count; i++) set->dpus[i].xfer_buffer = buffer;
    return DPU_OK;
}

dpu_error_t dpu_push_xfer(struct dpu_set_t dpu_set, dpu_xfer_t xfer, const char *symbol_name, uint32_t symbol_offset,
                          size_t length, dpu_xfer_flags_t flags)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_push_xfer: no set");
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU) return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_xfer: direction %d", (int)xfer);
    struct symbol s;
    dpu_error_t err = find_symbol(set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(set, symbol_name, &s, symbol_offset, length);
    /* A failed push leaves the buffers prepared: the caller clears them. */
    if (err != DPU_OK) return err;
    pthread_mutex_lock(&launch_lock);
    for (uint32_t i = first; i < first + count; i++) {
        struct dpu_t *d = &set->dpus[i];
        if (!d->xfer_buffer) continue;   /* DPUs without a prepared buffer take no part */
        uint8_t *target = s.at(d, s.offset + symbol_offset);
        if (xfer == DPU_XFER_TO_DPU) memcpy(target, d->xfer_buffer, length);
        else memcpy(d->xfer_buffer, target, length);
    }
    pthread_mutex_unlock(&launch_lock);
    if (!(flags & DPU_XFER_NO_RESET))
        for (uint32_t i = first; i < first + count; i++) set->dpus[i].xfer_buffer = NULL;
    return DPU_OK;
}

dpu_error_t dpu_broadcast_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src,
                             size_t length, dpu_xfer_flags_t flags)
{
    (void)flags;
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_broadcast_to: no set");
    struct symbol s;
    dpu_error_t err = find_symbol(set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(set, symbol_name, &s, symbol_offset, length);
    if (err != DPU_OK) return err;
    pthread_mutex_lock(&launch_lock);
    for (uint32_t i = first; i < first + count; i++) memcpy(s.at(&set->dpus[i], s.offset + symbol_offset), src, length);
    pthread_mutex_unlock(&launch_lock);
    return DPU_OK;
}

dpu_error_t dpu_copy_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src, size_t length)
{
    return dpu_broadcast_to(dpu_set, symbol_name, symbol_offset, src, length, DPU_XFER_DEFAULT);
}

dpu_error_t dpu_copy_from(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, void *dst, size_t length)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set || dpu_set.kind != DPU_SET_DPU) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_copy_from needs a single DPU");
    struct symbol s;
    dpu_error_t err = find_symbol(set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(set, symbol_name, &s, symbol_offset, length);
    if (err != DPU_OK) return err;
    pthread_mutex_lock(&launch_lock);
    memcpy(dst, s.at(dpu_set.dpu, s.offset + symbol_offset), length);
    pthread_mutex_unlock(&launch_lock);
    return DPU_OK;
}

/* No DPU printf is emulated; a faulted DPU's log holds the emulation's diagnosis of the fault. */
dpu_error_t dpu_log_read(struct dpu_set_t dpu_set, FILE *stream)
{
    if (dpu_set.kind != DPU_SET_DPU || !dpu_set.dpu) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_log_read needs a single DPU");
    if (dpu_set.dpu->faulted && stream) fprintf(stream, "%s\n", dpu_set.dpu->fault);
    return DPU_OK;
}

dpu_error_t dpu_status(struct dpu_set_t dpu_set, bool *done, bool *fault)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_status: no set");
    bool any = false;
    for (uint32_t i = first; i < first + count; i++) any |= set->dpus[i].faulted;
    if (done) *done = true;   /* launches complete before dpu_launch returns */
    if (fault) *fault = any;
    return DPU_OK;
}

/* ------------------------------------------------------------------------------------- DPU side: tasklets */

/* Coroutines. On x86-64 a minimal switch (callee-saved registers and the stack pointer): ucontext's
 * swapcontext makes a sigprocmask system call per switch, which dominated launches in virtual machines. Other
 * architectures use ucontext. */
#if defined(__x86_64__)
struct coro { void *sp; };
void dpu_emu_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl dpu_emu_switch\n"
        ".hidden dpu_emu_switch\n"
        ".type dpu_emu_switch,@function\n"
        "dpu_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size dpu_emu_switch, .-dpu_emu_switch\n");

/* A fresh stack that "returns" into entry with the ABI's alignment (rsp = 8 mod 16 at entry). */
static void coro_init(struct coro *c, uint8_t *stack, size_t size, void (*entry)(void))
{
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;            /* entry never returns */
    *--sp = (void *)entry;   /* popped by ret */
    for (int i = 0; i < 6; i++) *--sp = NULL;   /* rbp rbx r12..r15 */
    c->sp = sp;
}
static void coro_switch(struct coro *from, struct coro *to) { dpu_emu_switch(&from->sp, to->sp); }
#else
struct coro { ucontext_t ctx; };
static void coro_init(struct coro *c, uint8_t *stack, size_t size, void (*entry)(void))
{
    getcontext(&c->ctx);
    c->ctx.uc_stack.ss_sp = stack;
    c->ctx.uc_stack.ss_size = size;
    c->ctx.uc_link = NULL;
    makecontext(&c->ctx, entry, 0);
}
static void coro_switch(struct coro *from, struct coro *to) { swapcontext(&from->ctx, &to->ctx); }
#endif

enum tasklet_state { T_RUNNABLE, T_BARRIER, T_MUTEX, T_DONE };

struct tasklet {
    struct coro ctx;
    enum tasklet_state state;
    const void *waiting_on;
    uint8_t *stack;
    uintptr_t stack_base;        /* frame address at the kernel's entry: stack depth is measured from here */
};

struct launch {
    struct dpu_t *dpu;
    struct dpu_emu_kernel *kernel;
    struct coro scheduler;
    struct tasklet tasklets[24];
    unsigned int current;
    size_t heap_used;
    bool faulted;
    uint64_t cycles;             /* the model's DMA cycles of this DPU (perfcounter) */
    uint64_t rng;                /* randomised yields: xorshift state, 0 when off */
};

static __thread struct launch *running;

static uint64_t next_random(struct launch *l)
{
    uint64_t x = l->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return l->rng = x;
}

static void yield_to_scheduler(void)
{
    struct launch *l = running;
    coro_switch(&l->tasklets[l->current].ctx, &l->scheduler);
}

/* Fault the running DPU: record why, and leave this tasklet for good (the launch stops). */
static void dpu_fault(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void dpu_fault(const char *fmt, ...)
{
    struct launch *l = running;
    char reason[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(l->dpu->fault, sizeof l->dpu->fault, "DPU fault in kernel '%s', DPU %u, tasklet %u: %s", l->kernel->name,
             l->dpu->index, l->current, reason);
    l->faulted = true;
    yield_to_scheduler();
    abort(); /* never resumed */
}

/* The DPU stack a tasklet uses is its depth below the kernel's entry frame: more than STACK_SIZE_DEFAULT faults
 * (on hardware it would silently overwrite the neighbouring tasklet's stack). Checked at every call into the
 * runtime; host frames are a stand-in for DPU frames, of similar size for this kind of code. */
static void check_stack(void)
{
    struct launch *l = running;
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    uintptr_t base = l->tasklets[l->current].stack_base;
    if (base > here && base - here > l->kernel->stack_size)
        dpu_fault("stack of %zu B exceeds the tasklet's budget of %u B (STACK_SIZE_DEFAULT)", (size_t)(base - here), l->kernel->stack_size);
}

/* Randomised mode: give up the DPU here, half of the time. */
static void maybe_yield(void)
{
    struct launch *l = running;
    if (l->rng && (next_random(l) & 1)) yield_to_scheduler();
}

unsigned int dpu_emu_me(void) { return running ? running->current : 0; }

perfcounter_t dpu_emu_perfcounter_config(perfcounter_config_t config, bool reset_value)
{
    (void)config;
    if (!running) return 0;
    uint64_t old = running->cycles;
    if (reset_value) running->cycles = 0;
    return old;
}

perfcounter_t dpu_emu_perfcounter_get(void) { return running ? running->cycles : 0; }

static void wake(enum tasklet_state state, const void *object)
{
    struct launch *l = running;
    for (unsigned int i = 0; i < l->kernel->nr_tasklets; i++)
        if (l->tasklets[i].state == state && l->tasklets[i].waiting_on == object) {
            l->tasklets[i].state = T_RUNNABLE;
            l->tasklets[i].waiting_on = NULL;
        }
}

void dpu_emu_barrier_wait(barrier_t *barrier)
{
    struct launch *l = running;
    if (!l) return;
    check_stack();
    if (barrier->count == 0 || barrier->count > l->kernel->nr_tasklets)
        dpu_fault("barrier_wait on a barrier for %u tasklets, the kernel runs %u", barrier->count, l->kernel->nr_tasklets);
    if (++barrier->arrived == barrier->count) {
        barrier->arrived = 0;
        barrier->generation++;
        wake(T_BARRIER, barrier);
        maybe_yield();
        return;
    }
    l->tasklets[l->current].state = T_BARRIER;
    l->tasklets[l->current].waiting_on = barrier;
    yield_to_scheduler();
}

void dpu_emu_mutex_lock(mutex_id_t m)
{
    struct launch *l = running;
    if (!l) return;
    check_stack();
    maybe_yield();
    while (m->locked) {
        if (m->owner == l->current) dpu_fault("mutex_lock on a mutex this tasklet already holds");
        l->tasklets[l->current].state = T_MUTEX;
        l->tasklets[l->current].waiting_on = m;
        yield_to_scheduler();
    }
    m->locked = 1;
    m->owner = l->current;
}

void dpu_emu_mutex_unlock(mutex_id_t m)
{
    if (!running) return;
    m->locked = 0;
    wake(T_MUTEX, m);
    maybe_yield();
}

void *dpu_emu_mem_alloc(size_t size)
{
    struct launch *l = running;
    if (!l) return NULL;
    check_stack();
    size_t rounded = (size + 7) & ~(size_t)7;
    size_t heap_offset = l->dpu->set->heap_offset;
    uint32_t wram = l->dpu->set->chip->wram_bytes;
    if (heap_offset + l->heap_used + rounded > wram)
        dpu_fault("mem_alloc(%zu): WRAM heap exhausted (%zu of %zu heap bytes used; %s WRAM %u B = globals %zu + runtime %u + %u x %u B stacks + heap)",
                  size, l->heap_used, (size_t)wram - heap_offset, l->dpu->set->chip->name, wram, l->dpu->set->globals_bytes,
                  DPU_EMU_RUNTIME_WRAM_BYTES, l->kernel->nr_tasklets, l->kernel->stack_size);
    void *p = l->dpu->wram + heap_offset + l->heap_used;
    l->heap_used += rounded;
    return p;
}

void dpu_emu_mem_reset(void)
{
    if (running) running->heap_used = 0;
}

/* Whether a WRAM range lies wholly inside the running kernel's WRAM globals, the allocated heap or the current
 * tasklet's stack; with text, also says where it points (only formatted for a fault message). */
static bool check_wram(const void *p, size_t n, char *text, size_t cap)
{
    struct launch *l = running;
    const uint8_t *a = p;
    struct dpu_emu_kernel *k = l->kernel;
    if (a >= (uint8_t *)k->wram_start && a < (uint8_t *)k->wram_stop) {
        if (text) snprintf(text, cap, "WRAM 0x%04zx (globals)", (size_t)(a - (uint8_t *)k->wram_start));
        return a + n <= (uint8_t *)k->wram_stop;
    }
    uint8_t *heap = l->dpu->wram + l->dpu->set->heap_offset;
    if (a >= l->dpu->wram && a < l->dpu->wram + DPU_EMU_WRAM_IMAGE_BYTES) {
        if (text) snprintf(text, cap, "WRAM 0x%04zx (heap)", (size_t)(a - l->dpu->wram));
        return a >= heap && a + n <= heap + l->heap_used;
    }
    uint8_t *stack = l->tasklets[l->current].stack;
    if (a >= stack && a < stack + EMU_HOST_STACK_BYTES) {
        if (text) snprintf(text, cap, "WRAM stack of tasklet %u", l->current);
        return a + n <= stack + EMU_HOST_STACK_BYTES;
    }
    if (text) snprintf(text, cap, "host address %p (not in this DPU's WRAM)", p);
    return false;
}

static void dma_fault(bool write, const void *mram, void *wram, unsigned int n, const char *why) __attribute__((noreturn));
static void dma_fault(bool write, const void *mram, void *wram, unsigned int n, const char *why)
{
    struct dpu_emu_kernel *k = running->kernel;
    const uint8_t *m = mram;
    char wtext[96], mtext[64];
    check_wram(wram, n, wtext, sizeof wtext);
    if (m >= (uint8_t *)k->mram_start && m < (uint8_t *)k->mram_stop)
        snprintf(mtext, sizeof mtext, "MRAM 0x%07zx", (size_t)(m - (uint8_t *)k->mram_start));
    else
        snprintf(mtext, sizeof mtext, "address %p (not in this kernel's MRAM)", mram);
    dpu_fault("%s of %u bytes, %s -> %s: %s (DMA rules: 8 <= size <= 2048, size a multiple of 8, MRAM and WRAM addresses 8-byte aligned)",
              write ? "mram_write" : "mram_read", n, write ? wtext : mtext, write ? mtext : wtext, why);
}

static void dma(bool write, const void *mram, void *wram, unsigned int n)
{
    struct launch *l = running;
    if (!l) abort();   /* mram_read/mram_write outside a launch: a kernel called from host code */
    check_stack();
    struct dpu_emu_kernel *k = l->kernel;
    const uint8_t *m = mram;
    if (n < 8) dma_fault(write, mram, wram, n, "size below 8");
    if (n > 2048) dma_fault(write, mram, wram, n, "size above 2048");
    if (n % 8) dma_fault(write, mram, wram, n, "size not a multiple of 8");
    if (!(m >= (uint8_t *)k->mram_start && m < (uint8_t *)k->mram_stop)) dma_fault(write, mram, wram, n, "MRAM address outside the kernel's MRAM");
    size_t moff = (size_t)(m - (uint8_t *)k->mram_start);
    if (moff % 8 || (uintptr_t)m % 8) dma_fault(write, mram, wram, n, "MRAM address not 8-byte aligned");
    if ((uintptr_t)wram % 8) dma_fault(write, mram, wram, n, "WRAM address not 8-byte aligned");
    if (moff + n > (size_t)(k->mram_stop - k->mram_start) || moff + n > DPU_EMU_MRAM_BYTES)
        dma_fault(write, mram, wram, n, "MRAM range runs past the end of MRAM");
    if (!check_wram(wram, n, NULL, 0)) dma_fault(write, mram, wram, n, "WRAM range outside WRAM globals, allocated heap or the tasklet's stack");
    maybe_yield();
    uint8_t *real = l->dpu->mram + moff;
    if (write) memcpy(real, wram, n);
    else memcpy(wram, real, n);
    l->cycles += (write ? EMU_DMA_ALPHA_WRITE : EMU_DMA_ALPHA_READ) + n / 2;
}

void dpu_emu_mram_read(const void *from, void *to, unsigned int n) { dma(false, from, to, n); }
void dpu_emu_mram_write(const void *from, void *to, unsigned int n) { dma(true, to, (void *)from, n); }

static void tasklet_main(void)
{
    struct launch *l = running;
    l->tasklets[l->current].stack_base = (uintptr_t)__builtin_frame_address(0);
    l->kernel->entry();
    l->tasklets[l->current].state = T_DONE;
    yield_to_scheduler();   /* never resumed */
    abort();
}

/* Runs every tasklet of one DPU to completion; false on a fault or deadlock (the DPU's fault text set). */
static bool run_dpu(struct launch *l)
{
    unsigned int n = l->kernel->nr_tasklets;
    for (unsigned int i = 0; i < n; i++) {
        struct tasklet *t = &l->tasklets[i];
        t->state = T_RUNNABLE;
        t->waiting_on = NULL;
        coro_init(&t->ctx, t->stack, EMU_HOST_STACK_BYTES, tasklet_main);
    }
    l->heap_used = 0;
    l->faulted = false;
    l->cycles = 0;
    l->dpu->faulted = false;
    l->dpu->fault[0] = 0;
    for (;;) {
        bool ran = false, done = true;
        /* Round-robin from tasklet 0, or from a random tasklet in the randomised mode. */
        unsigned int start = l->rng ? (unsigned int)(next_random(l) % n) : 0;
        for (unsigned int j = 0; j < n && !l->faulted; j++) {
            unsigned int i = (start + j) % n;
            if (l->tasklets[i].state == T_DONE) continue;
            done = false;
            if (l->tasklets[i].state != T_RUNNABLE) continue;
            ran = true;
            l->current = i;
            coro_switch(&l->scheduler, &l->tasklets[i].ctx);
        }
        if (l->faulted) { l->dpu->faulted = true; return false; }
        if (done) return true;
        if (!ran) {
            unsigned int at_barrier = 0, at_mutex = 0;
            for (unsigned int i = 0; i < n; i++) {
                at_barrier += l->tasklets[i].state == T_BARRIER;
                at_mutex += l->tasklets[i].state == T_MUTEX;
            }
            snprintf(l->dpu->fault, sizeof l->dpu->fault,
                     "deadlock in kernel '%s', DPU %u: %u tasklets wait at a barrier, %u on a mutex, none can run",
                     l->kernel->name, l->dpu->index, at_barrier, at_mutex);
            l->dpu->faulted = true;
            return false;
        }
    }
}

/* Asynchronous launches run here too: the emulation has no background execution, dpu_sync returns at once. */
dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy)
{
    uint32_t first, count;
    struct dpu_emu_set *set = resolve(dpu_set, &first, &count);
    if (!set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_launch: no set");
    if (policy != DPU_SYNCHRONOUS && policy != DPU_ASYNCHRONOUS) return fail(DPU_ERR_INVALID_LAUNCH_POLICY, "launch policy %d", (int)policy);
    struct dpu_emu_kernel *k = set->kernel;
    if (!k) return fail(DPU_ERR_NO_PROGRAM_LOADED, "dpu_launch: no program loaded");
    if (running) return fail(DPU_ERR_INTERNAL, "dpu_launch called from inside a DPU kernel");
    struct launch *l = calloc(1, sizeof *l);
    if (!l) return fail(DPU_ERR_SYSTEM, "out of memory");
    l->kernel = k;
    dpu_error_t err = DPU_OK;
    size_t section = (size_t)(k->wram_stop - k->wram_start);
    pthread_mutex_lock(&launch_lock);
    /* Host stacks of the tasklet coroutines: one set for the process, used under launch_lock. */
    static uint8_t *stacks[24];
    static uint64_t launches;
    for (unsigned int i = 0; i < k->nr_tasklets; i++) {
        if (!stacks[i] && !(stacks[i] = malloc(EMU_HOST_STACK_BYTES))) err = fail(DPU_ERR_SYSTEM, "out of memory for tasklet stacks");
        l->tasklets[i].stack = stacks[i];
    }
    launches++;
    running = l;
    for (uint32_t i = first; i < first + count && err == DPU_OK; i++) {
        l->dpu = &set->dpus[i];
        /* A different interleaving per launch and DPU, reproducible from the seed. */
        l->rng = set->yield_seed ? (set->yield_seed * 0x9E3779B97F4A7C15ull) ^ (launches << 20) ^ (i + 1) : 0;
        if (section) memcpy(k->wram_start, l->dpu->wram, section);
        bool ok = run_dpu(l);
        if (section) memcpy(l->dpu->wram, k->wram_start, section);
        if (!ok) err = fail(DPU_ERR_DPU_FAULT, "%s", l->dpu->fault);
    }
    running = NULL;
    pthread_mutex_unlock(&launch_lock);
    free(l);
    return err;
}

dpu_error_t dpu_sync(struct dpu_set_t dpu_set)
{
    uint32_t first, count;
    return resolve(dpu_set, &first, &count) ? DPU_OK : fail(DPU_ERR_INVALID_DPU_SET, "dpu_sync: no set");
}
