/* LiveDlrm embedding-bag kernel for UPMEM DPUs (UpDLRM-style): each DPU sums the stored vectors its host-grouped
 * item lists name and writes one partial sum per segment; the host adds the partials of all DPUs. One launch
 * serves every table of the set (each segment names its table), or applies a batch of row updates.
 *
 * Built two ways from this one file (native/pim/CMakeLists.txt):
 *   real DPUs:  dpu-upmem-dpurte-clang -O2 -DNR_TASKLETS=16 -DSTACK_SIZE_DEFAULT=1024 -I../common
 *   emulation:  the host compiler against native/pim/emu/include, -ffp-contract=off (see docs/pim.md)
 *
 * Inputs (layout in pim_common.h): pim_args (per table, WRAM), pim_cache (hot vectors, WRAM), pim_in (per launch,
 * MRAM). Output: pim_out (MRAM), pim_cycles (WRAM). WRAM (v1B: 63,488 B): globals 25,640 B (cache 24 KiB, args
 * 1 KiB) + runtime 336 B + 16 tasklets x (1 KiB stack + 1.25 KiB buffers) = 62,840 B.
 *
 * fp32 tables: the DPU has no FPU, each + is a soft-float call (and x in weighted segments). int32 tables hold
 * fixed-point values (the host scales and converts back): integer adds, exact and order-independent.
 */
#include <stdint.h>

#include <alloc.h>
#include <attributes.h>
#include <barrier.h>
#include <defs.h>
#include <mram.h>
#include <perfcounter.h>

#include "pim_common.h"

#ifndef NR_TASKLETS
#define NR_TASKLETS 16
#endif

__host pim_table_args pim_args[PIM_MAX_TABLES];
__host uint64_t pim_cache[PIM_WRAM_CACHE_BYTES / sizeof(uint64_t)];
__host uint64_t pim_cycles;

__mram_noinit uint8_t pim_table[PIM_MRAM_TABLE_BYTES];
__mram_noinit uint8_t pim_in[PIM_MRAM_IN_BYTES];
__mram_noinit uint8_t pim_out[PIM_MRAM_OUT_BYTES];

BARRIER_INIT(heap_ready, NR_TASKLETS);
BARRIER_INIT(all_done, NR_TASKLETS);

/* Rewrites the stored vectors named by the update records (tasklets take records round-robin; the host never
 * names one slot twice in a launch). */
static void apply_updates(const pim_batch_header *header, uint32_t tasklet, uint8_t *row)
{
    for (uint32_t u = tasklet; u < header->nr_segments; u += NR_TASKLETS) {
        __dma_aligned pim_update update;
        mram_read(&pim_in[sizeof(pim_batch_header) + u * sizeof(pim_update)], &update, sizeof update);
        const pim_table_args *args = &pim_args[update.table & ~PIM_UPDATE_CACHE];
        const uint32_t bytes = args->slot_bytes;
        mram_read(&pim_in[update.vector_offset], row, bytes);
        if (update.table & PIM_UPDATE_CACHE) {
            uint8_t *cache = (uint8_t *)pim_cache + args->cache_base + update.slot * bytes;
            for (uint32_t j = 0; j < bytes; j++) cache[j] = row[j];
        } else {
            mram_write(row, &pim_table[args->slot_base + update.slot * bytes], bytes);
        }
    }
}

int main(void)
{
    const unsigned int tasklet = me();
    if (tasklet == 0) {
        mem_reset();
        perfcounter_config(COUNT_CYCLES, true);
    }
    barrier_wait(&heap_ready);

    void *acc_buffer = mem_alloc(PIM_MAX_SLICE_FLOATS * sizeof(float));
    void *row_buffer = mem_alloc(PIM_MAX_SLICE_FLOATS * sizeof(float));
    uint32_t *items = mem_alloc(PIM_ITEM_CHUNK * sizeof(uint32_t));

    __dma_aligned pim_batch_header header;
    mram_read(&pim_in[0], &header, sizeof header);
    if (header.mode == PIM_MODE_UPDATE) {
        apply_updates(&header, tasklet, row_buffer);
    } else {
        /* Segments round-robin over tasklets: a segment is one bag's share of one table on this DPU. */
        for (uint32_t s = tasklet; s < header.nr_segments; s += NR_TASKLETS) {
            __dma_aligned pim_segment segment;
            mram_read(&pim_in[sizeof(pim_batch_header) + s * sizeof(pim_segment)], &segment, sizeof segment);
            const pim_table_args *args = &pim_args[segment.table & ~PIM_SEGMENT_WEIGHTED];
            const uint32_t width = args->slice_floats;
            const uint32_t slot_bytes = args->slot_bytes;
            const uint32_t weighted = (segment.table & PIM_SEGMENT_WEIGHTED) != 0;
            const uint32_t integer = args->format == PIM_FORMAT_INT32;
            const uint8_t *cache = (const uint8_t *)pim_cache + args->cache_base;
            __mram_ptr uint8_t *slots = &pim_table[args->slot_base];
            /* Weighted: the first half of the buffer holds items, the second half their weights. */
            const uint32_t chunk = weighted ? PIM_ITEM_CHUNK / 2 : PIM_ITEM_CHUNK;
            float *weights = (float *)(items + PIM_ITEM_CHUNK / 2);
            float *acc = acc_buffer;
            int32_t *iacc = acc_buffer;
            for (uint32_t j = 0; j < width; j++) iacc[j] = 0;   /* 0 is also +0.0f */

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
                    const void *vector;
                    if (item & PIM_ITEM_CACHE_BIT) {
                        vector = cache + (item & ~PIM_ITEM_CACHE_BIT) * slot_bytes;
                    } else {
                        mram_read(&slots[item * slot_bytes], row_buffer, slot_bytes);
                        vector = row_buffer;
                    }
                    if (integer) {
                        const int32_t *v = vector;
                        /* Wrapping adds: the true partial fits int32 (PIM_INT_SEGMENT_ITEMS), so the result is exact. */
                        for (uint32_t j = 0; j < width; j++) iacc[j] = (int32_t)((uint32_t)iacc[j] + (uint32_t)v[j]);
                    } else if (weighted) {
                        const float *v = vector;
                        const float w = weights[k];
                        for (uint32_t j = 0; j < width; j++) acc[j] += w * v[j];
                    } else {
                        const float *v = vector;
                        for (uint32_t j = 0; j < width; j++) acc[j] += v[j];
                    }
                }
            }
            mram_write(acc_buffer, &pim_out[segment.out_offset], slot_bytes);
        }
    }
    barrier_wait(&all_done);
    if (tasklet == 0) pim_cycles = perfcounter_get();
    return 0;
}
