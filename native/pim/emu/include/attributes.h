/* Emulation of the UPMEM DPU <attributes.h> (see docs/pim.md, "Emulation").
 *
 * How kernel globals become per-DPU state: every kernel is compiled with -DDPU_EMU_KERNEL=<name> and the
 * prelude dpu_emu_prelude.h force-included. __host (and the BARRIER_INIT/MUTEX_INIT objects) go into the ELF
 * section "dpu_wram_<name>", so that section *is* the kernel's WRAM globals; the emulator keeps one 64 KB WRAM
 * image per DPU and swaps the image in and out of the section around each DPU's run (DPUs of a launch run one
 * after another). __mram_noinit arrays go into a NOBITS section "dpu_mram_<name>": it only reserves addresses
 * (never touched), and every mram_read/mram_write translates an address in it to the same offset of the running
 * DPU's own 64 MB MRAM buffer. Host transfers find symbols by name (dlsym) and by section. Kernels must keep all
 * WRAM state in __host variables, the mem_alloc heap or the stack: a plain global would be shared by all DPUs.
 */
#ifndef DPU_EMU_ATTRIBUTES_H
#define DPU_EMU_ATTRIBUTES_H

#ifndef DPU_EMU_KERNEL
#error "emulated DPU kernels are compiled with -DDPU_EMU_KERNEL=<kernel name> (see native/pim/CMakeLists.txt)"
#endif

#define DPU_EMU_STR2(x) #x
#define DPU_EMU_STR(x) DPU_EMU_STR2(x)
#define DPU_EMU_CAT2(a, b) a##b
#define DPU_EMU_CAT(a, b) DPU_EMU_CAT2(a, b)

#define DPU_EMU_WRAM_SECTION "dpu_wram_" DPU_EMU_STR(DPU_EMU_KERNEL)
/* The trailing '#' comments out the flags GCC appends, so the section is NOBITS: 63 MB of MRAM arrays cost
 * address space, not file size or memory. */
#define DPU_EMU_MRAM_SECTION "dpu_mram_" DPU_EMU_STR(DPU_EMU_KERNEL) ",\"aw\",@nobits#"

#define __host __attribute__((section(DPU_EMU_WRAM_SECTION), aligned(8), used))
#define __mram_noinit __attribute__((section(DPU_EMU_MRAM_SECTION), aligned(8), used))
#define __dma_aligned __attribute__((aligned(8)))
#define __mram_ptr
/* __mram (initialised MRAM) and direct dereference of MRAM pointers are not emulated: kernels use mram_read/write. */

#endif
