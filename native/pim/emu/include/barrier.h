/* Emulation of the UPMEM DPU <barrier.h>: tasklets are coroutines; a waiting tasklet yields until the last one arrives. */
#ifndef DPU_EMU_BARRIER_H
#define DPU_EMU_BARRIER_H
#include <attributes.h>
typedef struct barrier_t {
    unsigned int count;
    unsigned int arrived;
    unsigned int generation;
    unsigned int pad;
} barrier_t;
#define BARRIER_INIT(name, counter) __host barrier_t name = { (counter), 0, 0, 0 }
void dpu_emu_barrier_wait(barrier_t *barrier);
#define barrier_wait(b) dpu_emu_barrier_wait(b)
#endif
