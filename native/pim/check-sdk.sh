#!/usr/bin/env bash
# Checks native/pim against a UPMEM SDK install tree (SDK_DIR: include/dpu, lib/libdpu.so, share/upmem/include):
#   1. the host shim compiles with -std=c11 -Wall -Wextra -Werror against the SDK's <dpu.h>, with the flags the
#      SDK's dpu-pkg-config gives, and links against libdpu with no undefined symbol;
#   2. every DPU kernel passes clang -fsyntax-only -Wall -Wextra -Werror on a 32-bit target with the DPU's data
#      model (32-bit int and pointers, 64-bit long: clang's "spir" target has exactly that, i386 has a 32-bit long)
#      against the SDK's syslib/stdlib headers, with the three DPU builtins those headers call declared by a stub
#      (the real compiler is dpu-upmem-dpurte-clang; this checks the sources against the real headers and their
#      diagnose_if rules on DMA sizes).
# Not part of CI: the SDK is not redistributable. Usage: native/pim/check-sdk.sh SDK_DIR
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 SDK_DIR (an UPMEM SDK install tree with include/dpu, lib/libdpu.so, share/upmem/include)" >&2
  exit 2
fi
SDK="$(cd "$1" && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
for need in "$SDK/include/dpu/dpu.h" "$SDK/lib/libdpu.so" "$SDK/share/upmem/include/syslib/mram.h" "$SDK/bin/dpu-pkg-config"; do
  [ -e "$need" ] || { echo "check-sdk: $need is missing: not an UPMEM SDK install tree" >&2; exit 2; }
done
command -v pkg-config >/dev/null || { echo "check-sdk: pkg-config is needed (dpu-pkg-config calls it)" >&2; exit 2; }
# $CLANG, else clang on PATH, else the newest versioned one (Debian's clang-NN packages install no plain clang).
CLANG="${CLANG:-$(command -v clang || ls /usr/bin/clang-[0-9]* 2>/dev/null | grep -E '/clang-[0-9]+$' | sort -V | tail -n 1 || true)}"
[ -n "$CLANG" ] && command -v "$CLANG" >/dev/null || { echo "check-sdk: clang is needed for the DPU kernel check (apt-get install clang, or set CLANG)" >&2; exit 2; }
CC="${CC:-cc}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "SDK: $SDK ($(UPMEM_HOME="$SDK" "$SDK/bin/dpu-pkg-config" --modversion dpu))"
DPU_CFLAGS="$(UPMEM_HOME="$SDK" "$SDK/bin/dpu-pkg-config" --cflags dpu)"
DPU_LIBS="$(UPMEM_HOME="$SDK" "$SDK/bin/dpu-pkg-config" --libs dpu)"
echo "dpu-pkg-config: $DPU_CFLAGS $DPU_LIBS"

echo "== host shim: $CC -std=c11 -Wall -Wextra -Werror, linked against libdpu"
# shellcheck disable=SC2086
"$CC" -std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared -DPIM_BUILD_KIND=1 $DPU_CFLAGS -I"$HERE/common" \
  "$HERE/host/pim_host.c" -o "$WORK/liblivedlrm_pim.so" $DPU_LIBS -ldl -lm \
  -Wl,--no-undefined -Wl,-rpath,"$SDK/lib" -Wl,-rpath-link,"$SDK/lib" 2>&1 | tee "$WORK/host.log"
[ -s "$WORK/host.log" ] && { echo "check-sdk: the host shim produced diagnostics" >&2; exit 1; }
imported="$(nm -D --undefined-only "$WORK/liblivedlrm_pim.so" | awk '{print $2}' | grep '^dpu_' | sort)"
nm -D --defined-only "$SDK/lib/libdpu.so" | awk '{print $3}' > "$WORK/exported"
for sym in $imported; do
  grep -qx "$sym" "$WORK/exported" || { echo "check-sdk: $sym is not exported by libdpu" >&2; exit 1; }
done
echo "links: $(echo "$imported" | wc -l) dpu_* symbols, all exported by $(basename "$(readlink -f "$SDK/lib/libdpu.so")"): $(echo $imported)"

echo "== emulated <dpu.h> against the SDK's: every dpu_error_t value, struct dpu_set_t and iterator layouts"
names="$(grep -oE '^ *DPU_(OK|ERR_[A-Z_]+)' "$HERE/emu/include/dpu.h" | tr -d ' ' | grep -v ASYNC_JOBS)"
{
  echo '#include <dpu.h>'
  echo '#include <stddef.h>'
  echo '#include <stdio.h>'
  echo 'int main(void) {'
  for n in $names; do echo "  printf(\"_Static_assert($n == %d, \\\"$n\\\");\\n\", (int)$n);"; done
  for e in 'sizeof(struct dpu_set_t)' 'offsetof(struct dpu_set_t, list.nr_ranks)' 'offsetof(struct dpu_set_t, list.ranks)' \
           'offsetof(struct dpu_set_t, dpu)' 'sizeof(struct dpu_set_dpu_iterator_t)' 'offsetof(struct dpu_set_dpu_iterator_t, next)' \
           'sizeof(struct dpu_set_rank_iterator_t)' 'DPU_SET_RANKS' 'DPU_SET_DPU' 'DPU_XFER_ASYNC' 'DPU_SYNCHRONOUS' 'DPU_XFER_FROM_DPU'; do
    echo "  printf(\"_Static_assert($e == %d, \\\"$e\\\");\\n\", (int)($e));"
  done
  echo '  return 0; }'
} > "$WORK/emu_values.c"
"$CC" -std=c11 -Wall -Wextra -Werror -I"$HERE/emu/include" "$WORK/emu_values.c" -o "$WORK/emu_values"
{ echo '#include <dpu.h>'; echo '#include <stddef.h>'; "$WORK/emu_values"; } > "$WORK/sdk_asserts.c"
# shellcheck disable=SC2086
"$CC" -std=c11 -Wall -Wextra -Werror -fsyntax-only $DPU_CFLAGS "$WORK/sdk_asserts.c"
echo "same: $(echo "$names" | wc -l) error values and 12 layout facts"

echo "== DPU kernels: $("$CLANG" --version | head -n 1): -fsyntax-only --target=spir (ILP32, 64-bit long) -Wall -Wextra -Werror against the syslib headers"
cat > "$WORK/dpu_builtins.h" <<'STUB'
/* The DPU's data model, which the SDK's stdint.h assumes (uint64_t is unsigned long). */
_Static_assert(sizeof(int) == 4 && sizeof(void *) == 4 && sizeof(long) == 8, "not the DPU data model");
/* Declarations of the DPU builtins the syslib headers call (the DPU compiler provides them). */
unsigned int dpu_check_tid(void);
void dpu_check_ldma(void *to, const __attribute__((address_space(255))) void *from, unsigned int n);
void dpu_check_sdma(const void *from, __attribute__((address_space(255))) void *to, unsigned int n);
#define __builtin_dpu_tid dpu_check_tid
#define __builtin_dpu_ldma dpu_check_ldma
#define __builtin_dpu_sdma dpu_check_sdma
/* defs.h declares check_stack() without a prototype, which the spir target refuses; give it one first. */
int check_stack(void);
STUB
S="$SDK/share/upmem/include"
status=0
for kernel in "$HERE"/dpu/*.c; do
  for chip in v1A v1B; do
    defs=(-DNR_TASKLETS=16 -DSTACK_SIZE_DEFAULT=1024)
    [ "$chip" = v1B ] && defs+=(-D__dpu_v1B__)
    if "$CLANG" -fsyntax-only --target=spir -std=gnu11 -nostdinc -I"$S/stdlib" -I"$S/syslib" -I"$HERE/common" \
         -include "$WORK/dpu_builtins.h" "${defs[@]}" -Wall -Wextra -Werror "$kernel" 2>"$WORK/dpu.log"; then
      echo "ok   $(basename "$kernel") ($chip)"
    else
      echo "FAIL $(basename "$kernel") ($chip)"; cat "$WORK/dpu.log"; status=1
    fi
  done
done
[ $status -eq 0 ] && echo "check-sdk: all checks passed, 0 warnings"
exit $status
