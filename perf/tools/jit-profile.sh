#!/usr/bin/env bash
# Instruction-level profile of .NET JIT code on a VM without hardware counters.
#
#   perf/tools/jit-profile.sh OUT_DIR GRAB_AFTER_SECONDS METHOD_REGEX -- COMMAND ARGS...
#
# Runs COMMAND under `perf record -e cpu-clock` (a software timer: works where the PMU is not exposed) with the
# runtime's perf map on and W^X off (so JIT code is anonymous memory that the map describes). After
# GRAB_AFTER_SECONDS (the code must be JIT-compiled by then: pick a time inside the timed part of the run) it copies
# the code of the methods matching METHOD_REGEX out of /proc/PID/mem, and when COMMAND ends writes one annotated
# disassembly per method to OUT_DIR (percent of the method's samples per instruction) and prints the per-method
# shares. Needs perf, objdump and python3, and permission to read the process's memory (root or same user).
set -euo pipefail
[ $# -ge 5 ] && [ "$4" = "--" ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
out=$1 grab=$2 pattern=$3; shift 4
mkdir -p "$out"
rm -f /tmp/perf-*.map
DOTNET_PerfMapEnabled=3 DOTNET_EnableWriteXorExecute=0 perf record -q -k 1 -e cpu-clock -F 4000 -o "$out/perf.data" "$@" &
perf_pid=$!
sleep "$grab"
map=$(ls -t /tmp/perf-*.map 2>/dev/null | head -1)
[ -n "$map" ] || { echo "jit-profile: no /tmp/perf-PID.map after $grab s (is COMMAND a .NET process?)" >&2; wait $perf_pid; exit 1; }
pid=${map#/tmp/perf-}; pid=${pid%.map}
python3 "$(dirname "$0")/jit_annotate.py" grab "$pid" "$pattern" "$out/code.json"
wait $perf_pid
python3 "$(dirname "$0")/jit_annotate.py" annotate "$out/code.json" "$out/perf.data" "$out"
