/* Emulation of the UPMEM DPU <alloc.h>: the per-DPU WRAM heap (what the 64 KB leave after globals and stacks). */
#ifndef DPU_EMU_ALLOC_H
#define DPU_EMU_ALLOC_H
#include <stddef.h>
void *dpu_emu_mem_alloc(size_t size);
void dpu_emu_mem_reset(void);
#define mem_alloc(size) dpu_emu_mem_alloc(size)
#define mem_reset() dpu_emu_mem_reset()
#endif
