/* Emulation of the subset of the UPMEM host API (<dpu.h>) that native/pim/host uses, written from the public
 * documentation (docs/pim.md). Not the SDK: names and semantics follow the documented interface; the error
 * codes are a subset. Emulation-specific calls are prefixed dpu_emu_. */
#ifndef DPU_EMU_DPU_H
#define DPU_EMU_DPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum dpu_error_t {
    DPU_OK = 0,
    DPU_ERR_INTERNAL,
    DPU_ERR_SYSTEM,
    DPU_ERR_ALLOCATION,
    DPU_ERR_INVALID_DPU_SET,
    DPU_ERR_INVALID_WRAM_ACCESS,
    DPU_ERR_INVALID_MRAM_ACCESS,
    DPU_ERR_INVALID_SYMBOL_ACCESS,
    DPU_ERR_INVALID_MEMORY_TRANSFER,
    DPU_ERR_DPU_FAULT,
    DPU_ERR_ELF_INVALID_FILE,
    DPU_ERR_ELF_NO_SUCH_FILE,
    DPU_ERR_NO_PROGRAM_LOADED,
    DPU_ERR_INVALID_PROFILE,
    DPU_ERR_UNKNOWN_SYMBOL,
    DPU_ERR_INVALID_LAUNCH_POLICY,
} dpu_error_t;

#define DPU_ALLOCATE_ALL UINT32_MAX
#define DPU_MRAM_HEAP_POINTER_NAME "__sys_used_mram_end"   /* documented name; the emulation has no MRAM heap */

typedef enum dpu_xfer_t { DPU_XFER_TO_DPU, DPU_XFER_FROM_DPU } dpu_xfer_t;
typedef enum dpu_xfer_flags_t { DPU_XFER_DEFAULT = 0, DPU_XFER_NO_RESET = 1, DPU_XFER_ASYNC = 2 } dpu_xfer_flags_t;
typedef enum dpu_launch_policy_t { DPU_ASYNCHRONOUS, DPU_SYNCHRONOUS } dpu_launch_policy_t;

struct dpu_emu_set;
struct dpu_emu_dpu;
struct dpu_program_t;

/* A whole allocated set (dpu == NULL) or one DPU of it. */
struct dpu_set_t {
    struct dpu_emu_set *set;
    struct dpu_emu_dpu *dpu;
};

dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set);
dpu_error_t dpu_free(struct dpu_set_t dpu_set);
dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program);
dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus);
dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks);
dpu_error_t dpu_prepare_xfer(struct dpu_set_t dpu_set, void *buffer);
dpu_error_t dpu_push_xfer(struct dpu_set_t dpu_set, dpu_xfer_t xfer, const char *symbol_name, uint32_t symbol_offset,
                          size_t length, dpu_xfer_flags_t flags);
dpu_error_t dpu_broadcast_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src,
                             size_t length, dpu_xfer_flags_t flags);
dpu_error_t dpu_copy_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src,
                        size_t length);
dpu_error_t dpu_copy_from(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, void *dst,
                          size_t length);
dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy);
dpu_error_t dpu_sync(struct dpu_set_t dpu_set);
dpu_error_t dpu_log_read(struct dpu_set_t dpu_set, FILE *stream);
const char *dpu_error_to_string(dpu_error_t status);

/* Iteration: DPU_FOREACH(set, dpu) or DPU_FOREACH(set, dpu, index). */
bool dpu_emu_nth_dpu(struct dpu_set_t set, uint32_t index, struct dpu_set_t *dpu);
#define DPU_EMU_FOREACH_2(set, dpu) for (uint32_t dpu_emu_i_ = 0; dpu_emu_nth_dpu((set), dpu_emu_i_, &(dpu)); dpu_emu_i_++)
#define DPU_EMU_FOREACH_3(set, dpu, i) for ((i) = 0; dpu_emu_nth_dpu((set), (i), &(dpu)); (i)++)
#define DPU_EMU_FOREACH_PICK(_1, _2, _3, name, ...) name
#define DPU_FOREACH(...) DPU_EMU_FOREACH_PICK(__VA_ARGS__, DPU_EMU_FOREACH_3, DPU_EMU_FOREACH_2, unused)(__VA_ARGS__)

/* Emulation only: the detailed text of the last error on this thread (which kernel, DPU, tasklet, address, size). */
const char *dpu_emu_last_detail(void);
/* Emulation only: most DPUs a process may hold at once (address space: 64 MB of reserved MRAM each). */
#define DPU_EMU_MAX_DPUS 512u
#define DPU_EMU_MRAM_BYTES (64u << 20)
#define DPU_EMU_WRAM_BYTES (64u << 10)

#endif
