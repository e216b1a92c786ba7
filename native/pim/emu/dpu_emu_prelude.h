/* Force-included (-include) before every emulated kernel source: registers the kernel (its renamed main, its WRAM
 * and MRAM sections, NR_TASKLETS and the stack size it was built with) with the emulator at library load. */
#ifndef DPU_EMU_PRELUDE_H
#define DPU_EMU_PRELUDE_H
#include <attributes.h>
#include "dpu_emu_kernel.h"

#ifndef NR_TASKLETS
#error "NR_TASKLETS must be given with -D, as for dpu-upmem-dpurte-clang"
#endif
#ifndef STACK_SIZE_DEFAULT
#error "STACK_SIZE_DEFAULT must be given with -D, as for dpu-upmem-dpurte-clang"
#endif

int main(void); /* renamed per kernel by -Dmain=... */
extern char DPU_EMU_CAT(__start_dpu_wram_, DPU_EMU_KERNEL)[] __attribute__((weak, visibility("hidden")));
extern char DPU_EMU_CAT(__stop_dpu_wram_, DPU_EMU_KERNEL)[] __attribute__((weak, visibility("hidden")));
extern char DPU_EMU_CAT(__start_dpu_mram_, DPU_EMU_KERNEL)[] __attribute__((weak, visibility("hidden")));
extern char DPU_EMU_CAT(__stop_dpu_mram_, DPU_EMU_KERNEL)[] __attribute__((weak, visibility("hidden")));

static struct dpu_emu_kernel DPU_EMU_CAT(dpu_emu_kernel_, DPU_EMU_KERNEL);

__attribute__((constructor)) static void DPU_EMU_CAT(dpu_emu_register_, DPU_EMU_KERNEL)(void)
{
    struct dpu_emu_kernel *k = &DPU_EMU_CAT(dpu_emu_kernel_, DPU_EMU_KERNEL);
    k->name = DPU_EMU_STR(DPU_EMU_KERNEL);
    k->entry = main;
    k->wram_start = DPU_EMU_CAT(__start_dpu_wram_, DPU_EMU_KERNEL);
    k->wram_stop = DPU_EMU_CAT(__stop_dpu_wram_, DPU_EMU_KERNEL);
    k->mram_start = DPU_EMU_CAT(__start_dpu_mram_, DPU_EMU_KERNEL);
    k->mram_stop = DPU_EMU_CAT(__stop_dpu_mram_, DPU_EMU_KERNEL);
    k->nr_tasklets = NR_TASKLETS;
    k->stack_size = STACK_SIZE_DEFAULT;
    dpu_emu_register_kernel(k);
}
#endif
