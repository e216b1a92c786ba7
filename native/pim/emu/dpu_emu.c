/* The project's emulation of the UPMEM DPU runtime and host-API subset used by native/pim (design: docs/pim.md).
 *
 * - Each DPU: 64 MB MRAM reserved with mmap(MAP_NORESERVE) (pages are committed only when written), a 64 KB WRAM
 *   image laid out as [kernel WRAM globals][NR_TASKLETS stacks (budget only)][mem_alloc heap].
 * - A launch runs the DPUs of the set one after another (kernel globals live in one ELF section, see
 *   <attributes.h>); the tasklets of a DPU are coroutines scheduled round-robin, switching only at
 *   barrier_wait, a contended mutex or the end of main: deterministic, and a deadlock is detected.
 * - mram_read/mram_write enforce the DMA rules; a violation faults the DPU, the launch stops and returns
 *   DPU_ERR_DPU_FAULT, and dpu_emu_last_detail() names kernel, DPU, tasklet, addresses and size.
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

#define EMU_HOST_STACK_BYTES (64u << 10)   /* host stack of one tasklet coroutine (not the DPU's stack) */

struct dpu_emu_dpu {
    struct dpu_emu_set *set;
    uint32_t index;
    uint8_t *mram;
    uint8_t *wram;               /* DPU_EMU_WRAM_BYTES, 8-aligned */
    void *xfer_buffer;           /* dpu_prepare_xfer */
};

struct dpu_emu_set {
    uint32_t nr_dpus;
    struct dpu_emu_dpu *dpus;
    struct dpu_emu_kernel *kernel;
    size_t globals_bytes;        /* kernel WRAM section, rounded to 8 */
    size_t heap_offset;          /* first heap byte inside WRAM */
};

static struct dpu_emu_kernel *kernels;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t dpus_in_use;
/* Kernel globals are process-wide sections: one launch (or WRAM symbol access) at a time. */
static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread char last_detail[512];

static void set_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_detail, sizeof last_detail, fmt, ap);
    va_end(ap);
}

const char *dpu_emu_last_detail(void) { return last_detail; }

static dpu_error_t fail(dpu_error_t err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dpu_error_t fail(dpu_error_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_detail, sizeof last_detail, fmt, ap);
    va_end(ap);
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

const char *dpu_error_to_string(dpu_error_t status)
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
    case DPU_ERR_INVALID_MEMORY_TRANSFER: return "invalid memory transfer";
    case DPU_ERR_DPU_FAULT: return "DPU is in fault";
    case DPU_ERR_ELF_INVALID_FILE: return "invalid DPU program file";
    case DPU_ERR_ELF_NO_SUCH_FILE: return "no such DPU program file";
    case DPU_ERR_NO_PROGRAM_LOADED: return "no program loaded";
    case DPU_ERR_INVALID_PROFILE: return "invalid profile";
    case DPU_ERR_UNKNOWN_SYMBOL: return "unknown symbol";
    case DPU_ERR_INVALID_LAUNCH_POLICY: return "invalid launch policy";
    }
    return "unknown error";
}

/* ---------------------------------------------------------------------------------------------- host: sets */

static dpu_error_t check_profile(const char *profile)
{
    if (!profile || !*profile) return DPU_OK;
    char buf[256];
    if (strlen(profile) >= sizeof buf) return fail(DPU_ERR_INVALID_PROFILE, "profile too long");
    strcpy(buf, profile);
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
        } else
            return fail(DPU_ERR_INVALID_PROFILE, "the emulation knows no profile key '%s' (only backend=emulated)", key);
    }
    return DPU_OK;
}

dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set)
{
    if (!dpu_set) return fail(DPU_ERR_INTERNAL, "dpu_alloc: null set");
    dpu_error_t err = check_profile(profile);
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

    struct dpu_emu_set *set = calloc(1, sizeof *set);
    struct dpu_emu_dpu *dpus = calloc(nr_dpus, sizeof *dpus);
    if (!set || !dpus) goto oom;
    set->nr_dpus = nr_dpus;
    set->dpus = dpus;
    for (uint32_t i = 0; i < nr_dpus; i++) {
        dpus[i].set = set;
        dpus[i].index = i;
        void *m = mmap(NULL, DPU_EMU_MRAM_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) goto oom;
        dpus[i].mram = m;
        if (posix_memalign((void **)&dpus[i].wram, 64, DPU_EMU_WRAM_BYTES) != 0) { dpus[i].wram = NULL; goto oom; }
        memset(dpus[i].wram, 0, DPU_EMU_WRAM_BYTES);
    }
    dpu_set->set = set;
    dpu_set->dpu = NULL;
    return DPU_OK;
oom:
    if (set) { set->nr_dpus = nr_dpus; set->dpus = dpus; dpu_free((struct dpu_set_t){ set, NULL }); }
    else {
        free(dpus);
        pthread_mutex_lock(&registry_lock);
        dpus_in_use -= nr_dpus;
        pthread_mutex_unlock(&registry_lock);
    }
    return fail(DPU_ERR_ALLOCATION, "cannot allocate %u emulated DPUs: out of memory or address space (%s)", nr_dpus, strerror(errno));
}

dpu_error_t dpu_free(struct dpu_set_t dpu_set)
{
    struct dpu_emu_set *set = dpu_set.set;
    if (!set || dpu_set.dpu) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_free needs the whole allocated set");
    if (set->dpus)
        for (uint32_t i = 0; i < set->nr_dpus; i++) {
            if (set->dpus[i].mram) munmap(set->dpus[i].mram, DPU_EMU_MRAM_BYTES);
            free(set->dpus[i].wram);
        }
    pthread_mutex_lock(&registry_lock);
    dpus_in_use -= set->nr_dpus;
    pthread_mutex_unlock(&registry_lock);
    free(set->dpus);
    free(set);
    return DPU_OK;
}

dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus)
{
    if (!dpu_set.set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_get_nr_dpus: no set");
    *nr_dpus = dpu_set.dpu ? 1 : dpu_set.set->nr_dpus;
    return DPU_OK;
}

dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks)
{
    uint32_t n;
    dpu_error_t err = dpu_get_nr_dpus(dpu_set, &n);
    if (err == DPU_OK) *nr_ranks = (n + 63) / 64;
    return err;
}

bool dpu_emu_nth_dpu(struct dpu_set_t set, uint32_t index, struct dpu_set_t *dpu)
{
    if (!set.set) return false;
    if (set.dpu) {
        if (index != 0) return false;
        *dpu = set;
        return true;
    }
    if (index >= set.set->nr_dpus) return false;
    dpu->set = set.set;
    dpu->dpu = &set.set->dpus[index];
    return true;
}

/* The set's DPUs as [first, first + count). */
static void range_of(struct dpu_set_t s, uint32_t *first, uint32_t *count)
{
    if (s.dpu) { *first = s.dpu->index; *count = 1; }
    else { *first = 0; *count = s.set->nr_dpus; }
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
 * the host code identical to the SDK path (a binary file is loaded by path) while the code is compiled in. */
dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program)
{
    if (program) *program = NULL;
    if (!dpu_set.set || dpu_set.dpu) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_load: the emulation loads whole sets");
    FILE *f = binary_path ? fopen(binary_path, "r") : NULL;
    if (!f) return fail(DPU_ERR_ELF_NO_SUCH_FILE, "DPU program '%s': %s", binary_path ? binary_path : "(null)", strerror(errno));
    char line[256] = { 0 }, name[128] = { 0 };
    bool ok = fgets(line, sizeof line, f) && sscanf(line, "LIVEDLRM-DPU-EMU kernel=%127s", name) == 1;
    fclose(f);
    if (!ok) return fail(DPU_ERR_ELF_INVALID_FILE, "DPU program '%s' is not an emulated kernel descriptor (a real DPU ELF needs the UPMEM SDK build)", binary_path);
    struct dpu_emu_kernel *k = find_kernel(name);
    if (!k) return fail(DPU_ERR_ELF_INVALID_FILE, "DPU program '%s' names kernel '%s', which this library does not contain", binary_path, name);

    size_t globals = ((size_t)(k->wram_stop - k->wram_start) + 7) & ~(size_t)7;
    size_t stacks = (size_t)k->nr_tasklets * k->stack_size;
    if (k->nr_tasklets == 0 || k->nr_tasklets > 24)
        return fail(DPU_ERR_ELF_INVALID_FILE, "kernel '%s' was built with NR_TASKLETS=%u; a DPU runs 1..24 tasklets", k->name, k->nr_tasklets);
    if (globals + stacks > DPU_EMU_WRAM_BYTES)
        return fail(DPU_ERR_ELF_INVALID_FILE,
                    "kernel '%s' does not fit WRAM: globals %zu B + %u tasklets x %u B stack = %zu B > %u B",
                    k->name, globals, k->nr_tasklets, k->stack_size, globals + stacks, DPU_EMU_WRAM_BYTES);
    struct dpu_emu_set *set = dpu_set.set;
    set->kernel = k;
    set->globals_bytes = globals;
    set->heap_offset = globals + stacks;
    for (uint32_t i = 0; i < set->nr_dpus; i++) {
        memset(set->dpus[i].wram, 0, DPU_EMU_WRAM_BYTES);
        if (k->wram_initial) memcpy(set->dpus[i].wram, k->wram_initial, (size_t)(k->wram_stop - k->wram_start));
    }
    return DPU_OK;
}

/* --------------------------------------------------------------------------------------- host: transfers */

struct symbol { uint8_t *(*at)(struct dpu_emu_dpu *, size_t); size_t offset, size; bool mram; };

static uint8_t *wram_at(struct dpu_emu_dpu *d, size_t off) { return d->wram + off; }
static uint8_t *mram_at(struct dpu_emu_dpu *d, size_t off) { return d->mram + off; }

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

dpu_error_t dpu_prepare_xfer(struct dpu_set_t dpu_set, void *buffer)
{
    uint32_t first, count;
    if (!dpu_set.set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_prepare_xfer: no set");
    range_of(dpu_set, &first, &count);
    for (uint32_t i = first; i < first + count; i++) dpu_set.set->dpus[i].xfer_buffer = buffer;
    return DPU_OK;
}

dpu_error_t dpu_push_xfer(struct dpu_set_t dpu_set, dpu_xfer_t xfer, const char *symbol_name, uint32_t symbol_offset,
                          size_t length, dpu_xfer_flags_t flags)
{
    if (!dpu_set.set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_push_xfer: no set");
    struct symbol s;
    dpu_error_t err = find_symbol(dpu_set.set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(dpu_set.set, symbol_name, &s, symbol_offset, length);
    uint32_t first, count;
    range_of(dpu_set, &first, &count);
    if (err == DPU_OK) {
        pthread_mutex_lock(&launch_lock);
        for (uint32_t i = first; i < first + count; i++) {
            struct dpu_emu_dpu *d = &dpu_set.set->dpus[i];
            if (!d->xfer_buffer) continue;   /* DPUs without a prepared buffer take no part */
            uint8_t *target = s.at(d, s.offset + symbol_offset);
            if (xfer == DPU_XFER_TO_DPU) memcpy(target, d->xfer_buffer, length);
            else memcpy(d->xfer_buffer, target, length);
        }
        pthread_mutex_unlock(&launch_lock);
    }
    if (!(flags & DPU_XFER_NO_RESET))
        for (uint32_t i = first; i < first + count; i++) dpu_set.set->dpus[i].xfer_buffer = NULL;
    return err;
}

dpu_error_t dpu_broadcast_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src,
                             size_t length, dpu_xfer_flags_t flags)
{
    (void)flags;
    if (!dpu_set.set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_broadcast_to: no set");
    struct symbol s;
    dpu_error_t err = find_symbol(dpu_set.set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(dpu_set.set, symbol_name, &s, symbol_offset, length);
    if (err != DPU_OK) return err;
    uint32_t first, count;
    range_of(dpu_set, &first, &count);
    pthread_mutex_lock(&launch_lock);
    for (uint32_t i = first; i < first + count; i++) memcpy(s.at(&dpu_set.set->dpus[i], s.offset + symbol_offset), src, length);
    pthread_mutex_unlock(&launch_lock);
    return DPU_OK;
}

dpu_error_t dpu_copy_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src, size_t length)
{
    return dpu_broadcast_to(dpu_set, symbol_name, symbol_offset, src, length, DPU_XFER_DEFAULT);
}

dpu_error_t dpu_copy_from(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, void *dst, size_t length)
{
    if (!dpu_set.set || !dpu_set.dpu) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_copy_from needs a single DPU");
    struct symbol s;
    dpu_error_t err = find_symbol(dpu_set.set, symbol_name, &s);
    if (err == DPU_OK) err = check_range(dpu_set.set, symbol_name, &s, symbol_offset, length);
    if (err != DPU_OK) return err;
    pthread_mutex_lock(&launch_lock);
    memcpy(dst, s.at(dpu_set.dpu, s.offset + symbol_offset), length);
    pthread_mutex_unlock(&launch_lock);
    return DPU_OK;
}

dpu_error_t dpu_log_read(struct dpu_set_t dpu_set, FILE *stream)
{
    (void)stream;
    return dpu_set.set && dpu_set.dpu ? DPU_OK : fail(DPU_ERR_INVALID_DPU_SET, "dpu_log_read needs a single DPU");
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
};

struct launch {
    struct dpu_emu_dpu *dpu;
    struct dpu_emu_kernel *kernel;
    struct coro scheduler;
    struct tasklet tasklets[24];
    unsigned int current;
    size_t heap_used;
    bool faulted;
};

static __thread struct launch *running;

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
    set_detail("DPU fault in kernel '%s', DPU %u, tasklet %u: %s", l->kernel->name, l->dpu->index, l->current, reason);
    l->faulted = true;
    yield_to_scheduler();
    abort(); /* never resumed */
}

unsigned int dpu_emu_me(void) { return running ? running->current : 0; }

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
    if (barrier->count == 0 || barrier->count > l->kernel->nr_tasklets)
        dpu_fault("barrier_wait on a barrier for %u tasklets, the kernel runs %u", barrier->count, l->kernel->nr_tasklets);
    if (++barrier->arrived == barrier->count) {
        barrier->arrived = 0;
        barrier->generation++;
        wake(T_BARRIER, barrier);
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
}

void *dpu_emu_mem_alloc(size_t size)
{
    struct launch *l = running;
    if (!l) return NULL;
    size_t rounded = (size + 7) & ~(size_t)7;
    size_t heap_offset = l->dpu->set->heap_offset;
    if (heap_offset + l->heap_used + rounded > DPU_EMU_WRAM_BYTES)
        dpu_fault("mem_alloc(%zu): WRAM heap exhausted (%zu of %zu heap bytes used; WRAM %u B = globals %zu + %u x %u B stacks + heap)",
                  size, l->heap_used, (size_t)DPU_EMU_WRAM_BYTES - heap_offset, DPU_EMU_WRAM_BYTES,
                  l->dpu->set->globals_bytes, l->kernel->nr_tasklets, l->kernel->stack_size);
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
    if (a >= l->dpu->wram && a < l->dpu->wram + DPU_EMU_WRAM_BYTES) {
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
    if (!l) { set_detail("mram_%s outside a launch", write ? "write" : "read"); abort(); }
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
    uint8_t *real = l->dpu->mram + moff;
    if (write) memcpy(real, wram, n);
    else memcpy(wram, real, n);
}

void dpu_emu_mram_read(const void *from, void *to, unsigned int n) { dma(false, from, to, n); }
void dpu_emu_mram_write(const void *from, void *to, unsigned int n) { dma(true, to, (void *)from, n); }

static void tasklet_main(void)
{
    struct launch *l = running;
    l->kernel->entry();
    l->tasklets[l->current].state = T_DONE;
    yield_to_scheduler();   /* never resumed */
    abort();
}

/* Runs every tasklet of one DPU to completion; false on a fault or deadlock (detail set). */
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
    for (;;) {
        bool ran = false, done = true;
        for (unsigned int i = 0; i < n && !l->faulted; i++) {
            if (l->tasklets[i].state == T_DONE) continue;
            done = false;
            if (l->tasklets[i].state != T_RUNNABLE) continue;
            ran = true;
            l->current = i;
            coro_switch(&l->scheduler, &l->tasklets[i].ctx);
        }
        if (l->faulted) return false;
        if (done) return true;
        if (!ran) {
            unsigned int at_barrier = 0, at_mutex = 0;
            for (unsigned int i = 0; i < n; i++) {
                at_barrier += l->tasklets[i].state == T_BARRIER;
                at_mutex += l->tasklets[i].state == T_MUTEX;
            }
            set_detail("deadlock in kernel '%s', DPU %u: %u tasklets wait at a barrier, %u on a mutex, none can run",
                       l->kernel->name, l->dpu->index, at_barrier, at_mutex);
            return false;
        }
    }
}

dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy)
{
    if (!dpu_set.set) return fail(DPU_ERR_INVALID_DPU_SET, "dpu_launch: no set");
    if (policy != DPU_SYNCHRONOUS && policy != DPU_ASYNCHRONOUS) return fail(DPU_ERR_INVALID_LAUNCH_POLICY, "launch policy %d", (int)policy);
    struct dpu_emu_set *set = dpu_set.set;
    struct dpu_emu_kernel *k = set->kernel;
    if (!k) return fail(DPU_ERR_NO_PROGRAM_LOADED, "dpu_launch: no program loaded");
    if (running) return fail(DPU_ERR_INTERNAL, "dpu_launch called from inside a DPU kernel");
    struct launch *l = calloc(1, sizeof *l);
    if (!l) return fail(DPU_ERR_SYSTEM, "out of memory");
    l->kernel = k;
    dpu_error_t err = DPU_OK;
    size_t section = (size_t)(k->wram_stop - k->wram_start);
    uint32_t first, count;
    range_of(dpu_set, &first, &count);
    pthread_mutex_lock(&launch_lock);
    /* Host stacks of the tasklet coroutines: one set for the process, used under launch_lock. */
    static uint8_t *stacks[24];
    for (unsigned int i = 0; i < k->nr_tasklets; i++) {
        if (!stacks[i] && !(stacks[i] = malloc(EMU_HOST_STACK_BYTES))) err = fail(DPU_ERR_SYSTEM, "out of memory for tasklet stacks");
        l->tasklets[i].stack = stacks[i];
    }
    running = l;
    /* Asynchronous launches run here too: the emulation has no background execution, dpu_sync returns at once. */
    for (uint32_t i = first; i < first + count && err == DPU_OK; i++) {
        l->dpu = &set->dpus[i];
        if (section) memcpy(k->wram_start, l->dpu->wram, section);
        bool ok = run_dpu(l);
        if (section) memcpy(l->dpu->wram, k->wram_start, section);
        if (!ok) err = DPU_ERR_DPU_FAULT;
    }
    running = NULL;
    pthread_mutex_unlock(&launch_lock);
    free(l);
    return err;
}

dpu_error_t dpu_sync(struct dpu_set_t dpu_set)
{
    return dpu_set.set ? DPU_OK : fail(DPU_ERR_INVALID_DPU_SET, "dpu_sync: no set");
}
