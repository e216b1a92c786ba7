/* Emulation of the UPMEM DPU <mutex.h>. */
#ifndef DPU_EMU_MUTEX_H
#define DPU_EMU_MUTEX_H
#include <attributes.h>
typedef struct dpu_emu_mutex { unsigned int locked; unsigned int owner; } *mutex_id_t;
#define MUTEX_INIT(name) __host struct dpu_emu_mutex DPU_EMU_CAT(name, _storage) = { 0, 0 }; \
    static const mutex_id_t name = &DPU_EMU_CAT(name, _storage)
void dpu_emu_mutex_lock(mutex_id_t m);
void dpu_emu_mutex_unlock(mutex_id_t m);
#define mutex_lock(m) dpu_emu_mutex_lock(m)
#define mutex_unlock(m) dpu_emu_mutex_unlock(m)
#endif
