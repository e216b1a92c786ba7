/* Test kernel: WRAM globals that, with 16 tasklets of 1 KB stack, exceed the 64 KB WRAM. The emulation must
 * refuse to load it (on hardware the linker refuses to build it). */
#include <stdint.h>

#include <attributes.h>
#include <defs.h>

__host uint64_t hog[56u << 7]; /* 56 KB */

int main(void)
{
    hog[me()] = me();
    return 0;
}
