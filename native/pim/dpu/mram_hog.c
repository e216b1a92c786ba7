/* Test kernel: MRAM arrays of 65 MB, more than a DPU's 64 MB. The emulation must refuse to load it (the DPU linker
 * refuses to build it). */
#include <stdint.h>

#include <attributes.h>
#include <defs.h>
#include <mram.h>

__mram_noinit uint8_t mram_hog[65u << 20];

int main(void)
{
    __dma_aligned uint64_t word;
    mram_read(&mram_hog[0], &word, sizeof word);
    return (int)word;
}
