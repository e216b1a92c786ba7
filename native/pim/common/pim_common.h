/* The one contract between the LiveDlrm PIM host shim, the DPU kernel and the C# mirror
 * (engine/LiveDlrm.Engine/Pim/PimNative.cs; PimStructLayoutTests checks sizes and offsets through
 * pim_struct_layout()). Plain fixed-width fields only, every struct a multiple of 8 bytes, because host<->DPU
 * transfers move whole 8-byte words and the DPU compiler and the host compiler must agree on the layout.
 *
 * Per-DPU memory layout (all sizes fixed at build time; both sides derive offsets from these constants):
 *   MRAM  pim_table[PIM_MRAM_TABLE_BYTES]  stored vectors ("slots"), slot s at s * slot_bytes
 *   MRAM  pim_in[PIM_MRAM_IN_BYTES]        per batch: pim_batch_header, then nr_segments pim_segment,
 *                                          then the item list (uint32 each, every segment starting on an
 *                                          even item index so its first item is 8-byte aligned), then for
 *                                          weighted sums a float weight per item, same indices as the items
 *   MRAM  pim_out[PIM_MRAM_OUT_BYTES]      per batch: nr_segments partial sums, slice_floats floats each
 *   WRAM  pim_args (__host)                per table: pim_table_args
 *   WRAM  pim_cache (__host)               hot rows replicated into every DPU (broadcast), slot c at c * slot_bytes
 */
#ifndef LIVEDLRM_PIM_COMMON_H
#define LIVEDLRM_PIM_COMMON_H

#include <stdint.h>

#define PIM_MRAM_TABLE_BYTES (56u << 20)
#define PIM_MRAM_IN_BYTES    (4u << 20)
#define PIM_MRAM_OUT_BYTES   (3u << 20)
/* A stored vector (a row or a column slice of one) is at most this many floats: one mram_read per lookup,
 * well under the 2048-byte DMA limit, and the per-tasklet buffers below fit 16 tasklets into WRAM. */
#define PIM_MAX_SLICE_FLOATS 128u
#define PIM_WRAM_CACHE_BYTES (24u << 10)
/* Items fetched per mram_read of the item list (256 bytes). A weighted batch fetches half as many items and
 * their weights into the same 256-byte buffer, so weights cost no WRAM. */
#define PIM_ITEM_CHUNK       64u
/* An item with this bit set names a WRAM cache slot instead of an MRAM table slot. */
#define PIM_ITEM_CACHE_BIT   0x80000000u
/* Kernel binaries (the SDK build: DPU ELF files; the emulated build: descriptor files naming a built-in kernel). */
#define PIM_KERNEL_FILE      "livedlrm_pim_kernel.dpu"
#define PIM_PROBE_KERNEL_FILE "livedlrm_pim_dma_probe.dpu"

/* Set once per loaded table (dpu_broadcast_to "pim_args"). */
typedef struct pim_table_args {
    uint32_t slice_floats;   /* floats per stored vector, even, <= PIM_MAX_SLICE_FLOATS */
    uint32_t slot_bytes;     /* slice_floats * 4 */
    uint32_t nr_slots;       /* stored vectors on this DPU (only for bound checks) */
    uint32_t nr_cache;       /* vectors in the WRAM cache */
} pim_table_args;

/* First 16 bytes of pim_in for each batch. */
typedef struct pim_batch_header {
    uint32_t nr_segments;
    uint32_t nr_items;       /* including the padding items that keep segments 8-byte aligned */
    uint32_t items_offset;   /* byte offset of the item list inside pim_in */
    uint32_t weights_offset; /* 0: plain sums; else byte offset (8-aligned) of nr_items floats: Σ weight·vector */
} pim_batch_header;

/* One output partial sum: Σ vectors of items[begin, begin + count). */
typedef struct pim_segment {
    uint32_t item_begin;     /* even */
    uint32_t item_count;
} pim_segment;

/* Host-side description of one segment (C# -> shim): which bag and which column tile the partial sum belongs to. */
typedef struct pim_host_segment {
    uint32_t bag;
    uint32_t tile;
    uint32_t item_begin;     /* into the host item array of this DPU, any alignment (the shim re-packs) */
    uint32_t item_count;
} pim_host_segment;

/* One stored vector for pim_load_table / pim_update_rows: rows row_a (+ row_b when row_b >= 0, a precomputed
 * pair sum), columns [tile * slice_floats, +slice_floats) of the table, zero past dim. */
typedef struct pim_slot_desc {
    int64_t row_a;
    int64_t row_b;           /* -1: a plain row slice */
    uint32_t tile;
    uint32_t dpu;            /* pim_update_rows: target DPU, or PIM_ALL_DPUS for a WRAM cache slot */
    uint32_t slot;           /* pim_update_rows: slot index (MRAM) or cache index */
    uint32_t reserved;
} pim_slot_desc;

#define PIM_ALL_DPUS 0xFFFFFFFFu

/* Cumulative counters of one context (pim_stats). */
typedef struct pim_stats_t {
    uint64_t batches;
    uint64_t launches;
    uint64_t bytes_to_dpu;       /* as transferred: padded length × DPUs */
    uint64_t bytes_from_dpu;
    uint64_t items;              /* lookups served (MRAM + cache) */
    uint64_t cache_items;
    uint64_t ns_to_dpu;          /* wall time of the four phases */
    uint64_t ns_kernel;
    uint64_t ns_from_dpu;
    uint64_t ns_host_reduce;
    uint32_t nr_dpus;
    uint32_t backend;            /* pim_backend */
} pim_stats_t;

typedef enum pim_backend { PIM_BACKEND_EMULATED = 0, PIM_BACKEND_HW = 1, PIM_BACKEND_SIMULATOR = 2 } pim_backend;

/* Argument block of the DMA probe kernel (tests of the emulation's rule enforcement). */
typedef struct pim_probe_args {
    uint32_t write;          /* 0: mram_read, 1: mram_write */
    uint32_t size;
    uint32_t mram_offset;    /* byte offset into the probe's MRAM array */
    uint32_t wram_offset;    /* byte offset into the probe's WRAM buffer */
} pim_probe_args;

#define PIM_PROBE_MRAM_BYTES (1u << 20)
#define PIM_PROBE_WRAM_BYTES 4096u

#endif
