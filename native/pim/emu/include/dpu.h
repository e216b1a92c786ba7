/* The project's emulation of the UPMEM host API (<dpu.h> of SDK 2025.1), the part native/pim/host uses. The
 * types, their layouts, the error values and the function signatures are the SDK's, so pim_host.c compiles
 * unchanged against either (native/pim/check-sdk.sh compiles it against the real headers). What the emulation
 * does behind them is described in docs/pim.md. */
#ifndef DPU_EMU_DPU_H
#define DPU_EMU_DPU_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Same names, same order, hence the same values as the SDK's dpu_error.h. */
typedef enum dpu_error_t {
    DPU_OK,
    DPU_ERR_INTERNAL,
    DPU_ERR_SYSTEM,
    DPU_ERR_DRIVER,
    DPU_ERR_ALLOCATION,
    DPU_ERR_INVALID_DPU_SET,
    DPU_ERR_INVALID_THREAD_ID,
    DPU_ERR_INVALID_NOTIFY_ID,
    DPU_ERR_INVALID_WRAM_ACCESS,
    DPU_ERR_INVALID_IRAM_ACCESS,
    DPU_ERR_INVALID_MRAM_ACCESS,
    DPU_ERR_INVALID_SYMBOL_ACCESS,
    DPU_ERR_MRAM_BUSY,
    DPU_ERR_TRANSFER_ALREADY_SET,
    DPU_ERR_INVALID_PARALLEL_MEMORY_TRANSFER,
    DPU_ERR_WRAM_FIFO_FULL,
    DPU_ERR_NO_PROGRAM_LOADED,
    DPU_ERR_DIFFERENT_DPU_PROGRAMS,
    DPU_ERR_CORRUPTED_MEMORY,
    DPU_ERR_DPU_DISABLED,
    DPU_ERR_DPU_ALREADY_RUNNING,
    DPU_ERR_INVALID_MEMORY_TRANSFER,
    DPU_ERR_INVALID_LAUNCH_POLICY,
    DPU_ERR_DPU_FAULT,
    DPU_ERR_ELF_INVALID_FILE,
    DPU_ERR_ELF_NO_SUCH_FILE,
    DPU_ERR_ELF_NO_SUCH_SECTION,
    DPU_ERR_TIMEOUT,
    DPU_ERR_INVALID_PROFILE,
    DPU_ERR_UNKNOWN_SYMBOL,
    DPU_ERR_LOG_FORMAT,
    DPU_ERR_LOG_CONTEXT_MISSING,
    DPU_ERR_LOG_BUFFER_TOO_SMALL,
    DPU_ERR_VPD_INVALID_FILE,
    DPU_ERR_VPD_NO_REPAIR,
    DPU_ERR_NO_THREAD_PER_RANK,
    DPU_ERR_INVALID_BUFFER_SIZE,
    DPU_ERR_NONBLOCKING_SYNC_CALLBACK,
    DPU_ERR_TOO_MANY_TASKLETS,
    DPU_ERR_SG_TOO_MANY_BLOCKS,
    DPU_ERR_SG_LENGTH_MISMATCH,
    DPU_ERR_SG_NOT_ACTIVATED,
    DPU_ERR_SG_NOT_MRAM_SYMBOL,
    DPU_ERR_ASYNC_JOBS = (int)(1U << 31),
} dpu_error_t;

/* Allocated by the callee: the caller frees it (as with SDK 2025.1). */
char *dpu_error_to_string(dpu_error_t status);

typedef enum _dpu_set_kind_t { DPU_SET_RANKS, DPU_SET_DPU } dpu_set_kind_t;

struct dpu_rank_t;
struct dpu_t;
struct dpu_program_t;

/* Layout of the SDK's dpu_types.h: a list of ranks, or one DPU. A zeroed value has kind DPU_SET_RANKS, so callers
 * keep their own "allocated" flag. */
struct dpu_set_t {
    dpu_set_kind_t kind;
    union {
        struct {
            uint32_t nr_ranks;
            struct dpu_rank_t **ranks;
        } list;
        struct dpu_t *dpu;
    };
};

typedef enum _dpu_launch_policy_t { DPU_ASYNCHRONOUS, DPU_SYNCHRONOUS } dpu_launch_policy_t;
typedef enum _dpu_xfer_t { DPU_XFER_TO_DPU, DPU_XFER_FROM_DPU } dpu_xfer_t;
typedef enum _dpu_xfer_flags_t {
    DPU_XFER_DEFAULT = 0,
    DPU_XFER_NO_RESET = 1 << 0,
    DPU_XFER_ASYNC = 1 << 1,
    DPU_XFER_PARALLEL = 1 << 2,
} dpu_xfer_flags_t;

/* The SDK's convenience check: print, free the message, run on_error. */
#define DPU_CHECK(statement, on_error)                                                                 \
    do {                                                                                               \
        dpu_error_t dpu_check_error_ = (statement);                                                    \
        if (dpu_check_error_ != DPU_OK) {                                                              \
            char *dpu_check_text_ = dpu_error_to_string(dpu_check_error_);                             \
            fprintf(stderr, "%s:%d(%s): DPU Error (%s)\n", __FILE__, __LINE__, __func__, dpu_check_text_); \
            free(dpu_check_text_);                                                                     \
            on_error;                                                                                  \
        }                                                                                              \
    } while (0)
#define DPU_ASSERT(statement) DPU_CHECK(statement, exit(EXIT_FAILURE))

#define DPU_ALLOCATE_ALL (UINT_MAX)
#define DPU_MRAM_HEAP_POINTER_NAME "__sys_used_mram_end"   /* documented name; the emulation has no MRAM heap */

dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set);
dpu_error_t dpu_alloc_ranks(uint32_t nr_ranks, const char *profile, struct dpu_set_t *dpu_set);
dpu_error_t dpu_free(struct dpu_set_t dpu_set);
dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks);
dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus);

/* Iteration, as in the SDK: DPU_FOREACH(set, dpu) or DPU_FOREACH(set, dpu, index). */
struct dpu_set_rank_iterator_t {
    struct dpu_set_t *set;
    uint32_t count;
    uint32_t next_idx;
    bool has_next;
    struct dpu_set_t next;
};
struct dpu_set_dpu_iterator_t {
    struct dpu_set_rank_iterator_t rank_iterator;
    uint32_t count;
    uint32_t next_idx;
    bool has_next;
    struct dpu_set_t next;
};
struct dpu_set_rank_iterator_t dpu_set_rank_iterator_from(struct dpu_set_t *set);
void dpu_set_rank_iterator_next(struct dpu_set_rank_iterator_t *iterator);
struct dpu_set_dpu_iterator_t dpu_set_dpu_iterator_from(struct dpu_set_t *set);
void dpu_set_dpu_iterator_next(struct dpu_set_dpu_iterator_t *iterator);

#define DPU_EMU_CONCAT2_(a, b) a##b
#define DPU_EMU_CONCAT_(a, b) DPU_EMU_CONCAT2_(a, b)
#define DPU_EMU_PICK3_(_1, _2, name, ...) name
#define DPU_EMU_VARIANT_(...) DPU_EMU_PICK3_(__VA_ARGS__, I, X, none)
#define DPU_FOREACH(set, ...) DPU_EMU_CONCAT_(DPU_EMU_FOREACH_, DPU_EMU_VARIANT_(__VA_ARGS__))(set, __VA_ARGS__)
#define DPU_EMU_FOREACH_X(set, dpu)                                                                          \
    for (struct dpu_set_dpu_iterator_t dpu_emu_it_ = dpu_set_dpu_iterator_from(&(set)); \
         (dpu) = dpu_emu_it_.next, dpu_emu_it_.has_next; dpu_set_dpu_iterator_next(&dpu_emu_it_))
#define DPU_EMU_FOREACH_I(set, dpu, i)                                                                       \
    for (struct dpu_set_dpu_iterator_t dpu_emu_it_ = dpu_set_dpu_iterator_from(&(set));                      \
         (i) = dpu_emu_it_.count, (dpu) = dpu_emu_it_.next, dpu_emu_it_.has_next; dpu_set_dpu_iterator_next(&dpu_emu_it_))

dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program);
dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy);
dpu_error_t dpu_status(struct dpu_set_t dpu_set, bool *done, bool *fault);
dpu_error_t dpu_sync(struct dpu_set_t dpu_set);
dpu_error_t dpu_copy_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src, size_t length);
dpu_error_t dpu_copy_from(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, void *dst, size_t length);
dpu_error_t dpu_prepare_xfer(struct dpu_set_t dpu_set, void *buffer);
dpu_error_t dpu_push_xfer(struct dpu_set_t dpu_set, dpu_xfer_t xfer, const char *symbol_name, uint32_t symbol_offset,
                          size_t length, dpu_xfer_flags_t flags);
dpu_error_t dpu_broadcast_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src,
                             size_t length, dpu_xfer_flags_t flags);
dpu_error_t dpu_log_read(struct dpu_set_t set, FILE *stream);

#endif
