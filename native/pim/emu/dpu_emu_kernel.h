/* Emulator-internal: what a compiled-in kernel registers, and the emulated hardware limits. */
#ifndef DPU_EMU_KERNEL_H
#define DPU_EMU_KERNEL_H
#include <stddef.h>

/* Most DPUs a process may hold at once (address space: 64 MB of reserved MRAM each). */
#define DPU_EMU_MAX_DPUS 512u
#define DPU_EMU_MRAM_BYTES (64u << 20)
#define DPU_EMU_WRAM_IMAGE_BYTES (64u << 10)
#define DPU_EMU_DPUS_PER_RANK 64u
/* WRAM the DPU runtime keeps for itself, from the symbol tables of SDK 2025.1 (v1B): crt0.o's zero word, the
 * linker's 8-byte gap after it, the per-thread stack table (24 x 8 B), thread_profiling (96 B), the perfcounter
 * end value, the __host error/clock words (12 B, 16 aligned) and alloc.o's heap pointer, rounded to 8. */
#define DPU_EMU_RUNTIME_WRAM_BYTES 336u

struct dpu_emu_kernel {
    const char *name;
    int (*entry)(void);
    char *wram_start, *wram_stop;   /* the kernel's WRAM globals (live while one of its DPUs runs) */
    char *mram_start, *mram_stop;   /* addresses of its __mram_noinit arrays (never dereferenced) */
    unsigned int nr_tasklets;
    unsigned int stack_size;
    unsigned char *wram_initial;    /* the section as loaded: initial WRAM image of every DPU */
    struct dpu_emu_kernel *next;
};
void dpu_emu_register_kernel(struct dpu_emu_kernel *kernel);
#endif
