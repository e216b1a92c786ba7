/* Test kernel: every tasklet adds one to a shared WRAM counter with an MRAM read between its load and its store,
 * without (race_guarded = 0) or with a mutex. Unguarded, a tasklet switch at the read loses updates: the emulation's
 * randomised mode (profile emuYield=SEED) must show that (PimEmulationTests), its deterministic mode hides it. */
#include <stdint.h>

#include <attributes.h>
#include <defs.h>
#include <mram.h>
#include <mutex.h>

__host uint32_t race_guarded;
__host uint32_t race_count;
__mram_noinit uint64_t race_mram[NR_TASKLETS];
MUTEX_INIT(race_lock);

int main(void)
{
    __dma_aligned uint64_t scratch;
    if (race_guarded) mutex_lock(race_lock);
    uint32_t seen = race_count;
    mram_read(&race_mram[me()], &scratch, sizeof scratch);
    race_count = seen + 1;
    if (race_guarded) mutex_unlock(race_lock);
    return 0;
}
