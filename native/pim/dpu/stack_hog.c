/* Test kernel: a 2 KiB array on the stack of a kernel built with STACK_SIZE_DEFAULT=1024. On hardware it would
 * silently overwrite the next tasklet's stack; the emulation must fault at the transfer into it. */
#include <stdint.h>

#include <attributes.h>
#include <defs.h>
#include <mram.h>

__mram_noinit uint64_t stack_hog_mram[256];

int main(void)
{
    __dma_aligned uint64_t big[256];
    mram_read(&stack_hog_mram[0], big, sizeof big);
    return (int)big[me()];
}
