/* Emulation of the UPMEM DPU <perfcounter.h>. The emulated cycle counter is the cost model's, not a measurement:
 * it advances by alpha + beta x size cycles per mram_read/mram_write of the running DPU (docs/pim.md) and nothing
 * else, so it shows the DMA term only. */
#ifndef DPU_EMU_PERFCOUNTER_H
#define DPU_EMU_PERFCOUNTER_H
#include <stdbool.h>
#include <stdint.h>
typedef uint64_t perfcounter_t;
typedef enum _perfcounter_config_t { COUNT_SAME = 0, COUNT_CYCLES = 1, COUNT_INSTRUCTIONS = 2, COUNT_NOTHING = 3 } perfcounter_config_t;
perfcounter_t dpu_emu_perfcounter_config(perfcounter_config_t config, bool reset_value);
perfcounter_t dpu_emu_perfcounter_get(void);
#define perfcounter_config(config, reset) dpu_emu_perfcounter_config((config), (reset))
#define perfcounter_get() dpu_emu_perfcounter_get()
#endif
