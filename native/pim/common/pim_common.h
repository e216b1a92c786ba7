/* The one contract between the LiveDlrm PIM host shim, the DPU kernel and the C# mirror
 * (interop/LiveDlrm.Interop/Pim.cs; PimStructLayoutTests checks sizes and offsets through pim_struct_layout()).
 * Plain fixed-width fields only, every struct a multiple of 8 bytes, because host<->DPU transfers move whole
 * 8-byte words and the DPU compiler and the host compiler must agree on the layout.
 *
 * One DPU set holds up to PIM_MAX_TABLES tables; a batch over several tables is one launch. Per-DPU memory
 * (all sizes fixed at build time; both sides derive offsets from these constants):
 *   MRAM  pim_table[PIM_MRAM_TABLE_BYTES]  stored vectors ("slots") of every table; table t's slot s at
 *                                          pim_args[t].slot_base + s * slot_bytes
 *   MRAM  pim_in[PIM_MRAM_IN_BYTES]        per launch: pim_batch_header, then
 *                                          lookup: nr_segments pim_segment, then the item list (uint32 each, every
 *                                            segment starting on an even item index so its first item is 8-byte
 *                                            aligned), then, when a segment is weighted, a float weight per item
 *                                          update: nr_segments pim_update records, then the vectors they name
 *   MRAM  pim_out[PIM_MRAM_OUT_BYTES]      lookup: one partial sum per segment at its out_offset
 *   WRAM  pim_args[PIM_MAX_TABLES] (__host) per table: pim_table_args
 *   WRAM  pim_cache (__host)               hot vectors replicated into every DPU; table t's cache vector c at
 *                                          pim_args[t].cache_base + c * slot_bytes
 *   WRAM  pim_cycles (__host)              cycles of the last launch (perfcounter; the model's on the emulation)
 */
#ifndef LIVEDLRM_PIM_COMMON_H
#define LIVEDLRM_PIM_COMMON_H

#include <stdint.h>

#define PIM_MRAM_TABLE_BYTES (56u << 20)
#define PIM_MRAM_IN_BYTES    (4u << 20)
#define PIM_MRAM_OUT_BYTES   (3u << 20)
/* A stored vector (a row or a column slice of one) is at most this many elements: one mram_read per lookup,
 * well under the 2048-byte DMA limit, and the per-tasklet buffers below fit 16 tasklets into WRAM. */
#define PIM_MAX_SLICE_FLOATS 128u
#define PIM_WRAM_CACHE_BYTES (24u << 10)
#define PIM_MAX_TABLES       32u
/* Items fetched per mram_read of the item list (256 bytes). A weighted segment fetches half as many items and
 * their weights into the same 256-byte buffer, so weights cost no WRAM. */
#define PIM_ITEM_CHUNK       64u
/* An item with this bit set names a WRAM cache slot instead of an MRAM table slot. */
#define PIM_ITEM_CACHE_BIT   0x80000000u
/* pim_segment.table: this bit set means Σ weight·vector. */
#define PIM_SEGMENT_WEIGHTED 0x80000000u
/* pim_update.table: this bit set means the slot is a WRAM cache vector. */
#define PIM_UPDATE_CACHE     0x80000000u
/* Integer tables: stored values have |q| <= 2^PIM_INT_BITS, so a DPU partial sum of up to
 * PIM_INT_SEGMENT_ITEMS items (a pair slot holds up to 2^(BITS+1)) cannot leave int32; the shim splits longer segments. */
#define PIM_INT_BITS          23u
#define PIM_INT_SEGMENT_ITEMS 127u
/* Kernel binaries (the SDK build: DPU ELF files; the emulated build: descriptor files naming a built-in kernel). */
#define PIM_KERNEL_FILE      "livedlrm_pim_kernel.dpu"
#define PIM_PROBE_KERNEL_FILE "livedlrm_pim_dma_probe.dpu"

typedef enum pim_format { PIM_FORMAT_FP32 = 0, PIM_FORMAT_INT32 = 1 } pim_format;
typedef enum pim_mode { PIM_MODE_LOOKUP = 0, PIM_MODE_UPDATE = 1 } pim_mode;

/* Per table and DPU (pushed per DPU into pim_args[table]). */
typedef struct pim_table_args {
    uint32_t slice_floats;   /* elements per stored vector, even, <= PIM_MAX_SLICE_FLOATS */
    uint32_t slot_bytes;     /* slice_floats * 4 */
    uint32_t nr_slots;       /* stored vectors of this table on this DPU (only for bound checks) */
    uint32_t nr_cache;       /* its vectors in the WRAM cache */
    uint32_t slot_base;      /* byte offset of its slots in pim_table, a multiple of 8 */
    uint32_t cache_base;     /* byte offset of its cache vectors in pim_cache, a multiple of 8 */
    uint32_t format;         /* pim_format: fp32 sums (soft-float on the DPU) or exact int32 sums */
    uint32_t reserved;
} pim_table_args;

/* First 16 bytes of pim_in for each launch. */
typedef struct pim_batch_header {
    uint32_t mode;           /* pim_mode */
    uint32_t nr_segments;    /* lookup: segments; update: pim_update records */
    uint32_t items_offset;   /* lookup: byte offset of the item list; update: of the vectors */
    uint32_t weights_offset; /* lookup: 0 when no segment is weighted, else byte offset (8-aligned) of one float per item */
} pim_batch_header;

/* One output partial sum: Σ vectors of items[begin, begin + count) of one table, written at out_offset. */
typedef struct pim_segment {
    uint32_t item_begin;     /* even */
    uint32_t item_count;
    uint32_t table;          /* table id, | PIM_SEGMENT_WEIGHTED */
    uint32_t out_offset;     /* byte offset in pim_out, a multiple of 8 */
} pim_segment;

/* One stored vector to rewrite (update mode): its new value is at vector_offset in pim_in. */
typedef struct pim_update {
    uint32_t table;          /* table id, | PIM_UPDATE_CACHE for a WRAM cache vector */
    uint32_t slot;
    uint32_t vector_offset;
    uint32_t reserved;
} pim_update;

/* Host-side description of one segment (C# -> shim): which bag and which column tile the partial sum belongs to. */
typedef struct pim_host_segment {
    uint32_t bag;
    uint32_t tile;
    uint32_t item_begin;     /* into the host item array of this DPU, any alignment (the shim re-packs) */
    uint32_t item_count;
} pim_host_segment;

/* One table's share of a multi-table lookup (C# -> shim), laid out as pim_lookup's arguments. */
typedef struct pim_table_batch {
    uint32_t table;
    uint32_t nr_bags;
    const pim_host_segment *segs;
    const uint32_t *segs_per_dpu;
    const uint32_t *items;
    const float *weights;            /* NULL: plain sums */
    const uint32_t *items_per_dpu;
    float *output;                   /* nr_bags x dim, overwritten */
    uint64_t output_floats;
} pim_table_batch;

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

/* pim_update_rows flags. */
#define PIM_UPDATE_PER_SLOT 1u   /* one dpu_copy_to per MRAM slot and one broadcast per cache vector (the baseline) */

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
    uint64_t update_launches;    /* batched row updates: one push + one launch per round */
    uint64_t updated_vectors;
    uint64_t ns_update;
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
