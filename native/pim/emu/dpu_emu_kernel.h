/* Emulator-internal: what a compiled-in kernel registers. */
#ifndef DPU_EMU_KERNEL_H
#define DPU_EMU_KERNEL_H
#include <stddef.h>
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
