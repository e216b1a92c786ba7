/* Emulation of the UPMEM DPU <mram.h>. Every transfer is checked against the DMA rules (size a multiple of 8,
 * 8 <= size <= 2048, both addresses 8-byte aligned, MRAM range inside the kernel's MRAM, WRAM range inside the
 * WRAM globals, the heap or the tasklet's stack); a violation faults the DPU and aborts the launch. */
#ifndef DPU_EMU_MRAM_H
#define DPU_EMU_MRAM_H
#include <attributes.h>
void dpu_emu_mram_read(const void *from, void *to, unsigned int nb_of_bytes);
void dpu_emu_mram_write(const void *from, void *to, unsigned int nb_of_bytes);
#define mram_read(from, to, n) dpu_emu_mram_read((from), (to), (n))
#define mram_write(from, to, n) dpu_emu_mram_write((from), (to), (n))
#endif
