/* LiveDlrm embedding-bag kernel for UPMEM DPUs (UpDLRM-style): each DPU sums the stored vectors its host-grouped
 * item lists name and writes one partial sum per segment; the host adds the partials of all DPUs.
 *
 * Built two ways from this one file (native/pim/CMakeLists.txt):
 *   real DPUs:  dpu-upmem-dpurte-clang -O2 -DNR_TASKLETS=16 -DSTACK_SIZE_DEFAULT=1024 -I../common
 *   emulation:  the host compiler against native/pim/emu/include (see docs/pim.md)
 *
 * Inputs (layout in pim_common.h): pim_args (per table, WRAM), pim_cache (hot vectors, WRAM), pim_in (per batch,
 * MRAM). Output: pim_out (MRAM). WRAM budget (64 KB): pim_cache 24 KB + 16 tasklets x (1 KB stack + 1.25 KB
 * buffers) = 60 KB + 16 B.
 */
#include <stdint.h>

#include <alloc.h>
#include <attributes.h>
#include <barrier.h>
#include <defs.h>
#include <mram.h>

#include "pim_common.h"

#ifndef NR_TASKLETS
#define NR_TASKLETS 16
#endif

__host pim_table_args pim_args;
__host float pim_cache[PIM_WRAM_CACHE_BYTES / sizeof(float)];

__mram_noinit uint8_t pim_table[PIM_MRAM_TABLE_BYTES];
__mram_noinit uint8_t pim_in[PIM_MRAM_IN_BYTES];
__mram_noinit uint8_t pim_out[PIM_MRAM_OUT_BYTES];

BARRIER_INIT(heap_ready, NR_TASKLETS);

int main(void)
{
    const unsigned int tasklet = me();
    if (tasklet == 0) mem_reset();
    barrier_wait(&heap_ready);

    float *acc = mem_alloc(PIM_MAX_SLICE_FLOATS * sizeof(float));
    float *row = mem_alloc(PIM_MAX_SLICE_FLOATS * sizeof(float));
    uint32_t *items = mem_alloc(PIM_ITEM_CHUNK * sizeof(uint32_t));

    __dma_aligned pim_batch_header header;
    mram_read(&pim_in[0], &header, sizeof header);
    const uint32_t width = pim_args.slice_floats;
    const uint32_t slot_bytes = pim_args.slot_bytes;
    const uint32_t weighted = header.weights_offset != 0;
    /* Weighted: the first half of the buffer holds items, the second half their weights. */
    const uint32_t chunk = weighted ? PIM_ITEM_CHUNK / 2 : PIM_ITEM_CHUNK;
    float *weights = (float *)(items + PIM_ITEM_CHUNK / 2);

    /* Segments round-robin over tasklets: a segment is one bag's share on this DPU, usually a handful of items. */
    for (uint32_t s = tasklet; s < header.nr_segments; s += NR_TASKLETS) {
        __dma_aligned pim_segment segment;
        mram_read(&pim_in[sizeof(pim_batch_header) + s * sizeof(pim_segment)], &segment, sizeof segment);
        for (uint32_t j = 0; j < width; j++) acc[j] = 0.0f;

        for (uint32_t done = 0; done < segment.item_count; done += chunk) {
            uint32_t n = segment.item_count - done;
            if (n > chunk) n = chunk;
            /* item_begin is even and done a multiple of the chunk, so the read starts 8-byte aligned; an odd n
             * reads one padding item (and weight) the host placed after the list. */
            mram_read(&pim_in[header.items_offset + (segment.item_begin + done) * sizeof(uint32_t)], items,
                      ((n + 1) & ~1u) * sizeof(uint32_t));
            if (weighted)
                mram_read(&pim_in[header.weights_offset + (segment.item_begin + done) * sizeof(float)], weights,
                          ((n + 1) & ~1u) * sizeof(float));
            for (uint32_t k = 0; k < n; k++) {
                const uint32_t item = items[k];
                const float *vector;
                if (item & PIM_ITEM_CACHE_BIT) {
                    vector = &pim_cache[(item & ~PIM_ITEM_CACHE_BIT) * width];
                } else {
                    mram_read(&pim_table[item * slot_bytes], row, slot_bytes);
                    vector = row;
                }
                if (weighted) {
                    const float w = weights[k];
                    for (uint32_t j = 0; j < width; j++) acc[j] += w * vector[j];
                } else {
                    for (uint32_t j = 0; j < width; j++) acc[j] += vector[j];
                }
            }
        }
        mram_write(acc, &pim_out[s * slot_bytes], slot_bytes);
    }
    return 0;
}
