/* Emulation of the UPMEM DPU <defs.h>: the tasklet id. */
#ifndef DPU_EMU_DEFS_H
#define DPU_EMU_DEFS_H
typedef unsigned int sysname_t;
unsigned int dpu_emu_me(void);
#define me() dpu_emu_me()
#endif
