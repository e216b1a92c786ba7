/* Test kernel: performs exactly the one DMA transfer the host describes in probe_args, on tasklet 0. Used to show
 * that the emulation enforces each DMA rule (tests/LiveDlrm.Tests/Pim/PimEmulationTests.cs). On hardware a
 * misaligned address would be silently rounded down; the compiler cannot see these sizes, so nothing stops it. */
#include <stdint.h>

#include <attributes.h>
#include <defs.h>
#include <mram.h>

#include "pim_common.h"

__host pim_probe_args probe_args;
__host uint64_t probe_wram[PIM_PROBE_WRAM_BYTES / sizeof(uint64_t)];
__mram_noinit uint8_t probe_mram[PIM_PROBE_MRAM_BYTES];

int main(void)
{
    if (me() != 0) return 0;
    uint8_t *wram = (uint8_t *)probe_wram + probe_args.wram_offset;
    if (probe_args.write) mram_write(wram, &probe_mram[probe_args.mram_offset], probe_args.size);
    else mram_read(&probe_mram[probe_args.mram_offset], wram, probe_args.size);
    return 0;
}
