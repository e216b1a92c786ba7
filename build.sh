#!/usr/bin/env bash
# LiveDlrm build entry point. Verbs:
#   run            everything needed, then the main job on the embedded default
#   test           everything needed, then all tests; ends with "N passed, N failed[, N skipped]"
#   cli ARGS...    build if needed, then run the livedlrm host with ARGS
#   bench [NAME]   comparative benchmark runs (perf/), results in artifacts/bench/
#   fuzz [TARGET] [--seconds N]  fuzz the parsers (tests/LiveDlrm.Fuzz) N s per target (default 60); finds go to its corpus/
#   pack           NuGet packages LiveDlrm.Engine + LiveDlrm.Interop into artifacts/packages/ (docs/embedding.md)
#   build          native + managed build only
#   clean          remove build outputs
set -euo pipefail
# Builds run in the repository; the CLI and the bench runner run in the caller's directory, so a relative path
# given to them means what it means to the caller.
CALLER_DIR="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
CONFIG="${CONFIG:-Release}"
NATIVE_BUILD="$ROOT/artifacts/native/build"
NATIVE_LIB="$ROOT/artifacts/native/lib"
CLI_DLL="$ROOT/engine/LiveDlrm.Cli/bin/$CONFIG/net10.0/livedlrm.dll"

# Debian packages the build and the tests need: the C toolchain for native/, libnuma and hwloc for the NUMA layer
# (optional at run time, present for the tests), fontconfig for ScottPlot's Skia backend, python3-torch for the
# tests that check PyTorch DLRM checkpoints against real PyTorch (/usr/bin/python3; a few minutes on a fresh machine),
# nats-server for the fleet's training-example log (tests start their own on a free loopback port).
APT_PACKAGES=(cmake make gcc libc6-dev libnuma1 libhwloc15 libfontconfig1 python3-torch nats-server)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

ensure_system() {
  command -v dotnet >/dev/null 2>&1 || die "the .NET 10 SDK is required (dotnet not on PATH); install it from your distribution or Microsoft's packages, then rerun."
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    die "missing packages: ${missing[*]}. Install them with:  sudo apt-get install -y ${missing[*]}  (then rerun)"
  fi
}

build_native() {
  log "native (CMake, $(cc --version | head -n1))"
  cmake -S native -B "$NATIVE_BUILD" -DCMAKE_BUILD_TYPE=Release -DLIVEDLRM_LIB_DIR="$NATIVE_LIB" >/dev/null
  cmake --build "$NATIVE_BUILD" -j "$(nproc)" >&2
}

build_managed() {
  log "dotnet build ($CONFIG)"
  dotnet build LiveDlrm.slnx -c "$CONFIG" -nologo -clp:NoSummary -v:q >&2
}

build_all() { ensure_system; build_native; build_managed; }

# Packages: the PIM shim is built for them against the project's emulation (portable -O2, whatever SDK this machine
# has), into its own directory so the repository's own native build stays as it is.
PACK_NATIVE_BUILD="$ROOT/artifacts/native/pack-build"
PACK_NATIVE_LIB="$ROOT/artifacts/native/pack-lib/"
PACKAGES="$ROOT/artifacts/packages"
pack_packages() {
  ensure_system
  log "native for the packages (PIM shim against the emulation)"
  cmake -S native -B "$PACK_NATIVE_BUILD" -DCMAKE_BUILD_TYPE=Release -DLIVEDLRM_LIB_DIR="$PACK_NATIVE_LIB" \
        -DLIVEDLRM_PIM_FORCE_EMULATION=ON >/dev/null
  cmake --build "$PACK_NATIVE_BUILD" --target livedlrm_pim -j "$(nproc)" >&2
  mkdir -p "$PACKAGES"
  rm -f "$PACKAGES"/LiveDlrm.Engine.*.nupkg "$PACKAGES"/LiveDlrm.Interop.*.nupkg
  local p
  for p in interop/LiveDlrm.Interop engine/LiveDlrm.Engine; do
    log "dotnet pack $p"
    dotnet pack "$p" -c Release -o "$PACKAGES" -nologo -clp:NoSummary -v:q -p:LiveDlrmPackNativeDir="$PACK_NATIVE_LIB" >&2
  done
  ls "$PACKAGES"/LiveDlrm.*.nupkg
}

cli_up_to_date() {
  [ -f "$CLI_DLL" ] || return 1
  [ -z "$(find engine interop native build Directory.*.props Directory.*.targets -newer "$CLI_DLL" -type f \
           \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.targets' -o -name '*.c' -o -name '*.h' -o -name 'CMakeLists.txt' \) \
           -not -path '*/bin/*' -not -path '*/obj/*' 2>/dev/null | head -n1)" ]
}

run_tests() {
  build_all
  local results="$ROOT/artifacts/test"
  rm -rf "$results"; mkdir -p "$results"
  log "dotnet test"
  set +e
  dotnet test LiveDlrm.slnx -c "$CONFIG" --no-build -nologo \
    --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" \
    --results-directory "$results" --blame-hang-timeout 10m "$@"
  local rc=$?
  set -e
  local trx passed=0 failed=0 total=0 executed=0 notrun=0
  for trx in $(find "$results" -name '*.trx'); do
    local counters
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n1)
    attr() { printf '%s' "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
    passed=$((passed + $(attr passed))); failed=$((failed + $(attr failed) + $(attr error) + $(attr timeout) + $(attr aborted)))
    total=$((total + $(attr total))); executed=$((executed + $(attr executed)))
    notrun=$((notrun + $(attr notExecuted)))
    # Name the failures here too: the console log scrolls, and the trx is replaced by the next run.
    grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*>' "$trx" | sed -n 's/.*testName="\([^"]*\)".*/  failed: \1/p' || true
  done
  if [ "$total" -eq 0 ]; then echo "build.sh: no test results found (dotnet test exit $rc)" >&2; [ $rc -eq 0 ] && rc=1; fi
  [ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1   # a crash of the test host counts as a failure
  local line="$passed passed, $failed failed"
  [ "$notrun" -gt 0 ] && line="$line, $notrun skipped"
  echo "$line"
  [ "$failed" -eq 0 ] && [ $rc -eq 0 ]
}

run_cli() {
  cli_up_to_date || build_all
  cd "$CALLER_DIR"
  exec dotnet "$CLI_DLL" "$@"
}

verb="${1:-}"; shift || true
case "$verb" in
  run)   cli_up_to_date || build_all; exec dotnet "$CLI_DLL" replay --mode all "$@" ;;
  test)  run_tests "$@" ;;
  cli)   run_cli "$@" ;;
  bench) build_all; cd "$CALLER_DIR"; exec dotnet "$ROOT/perf/LiveDlrm.Perf/bin/$CONFIG/net10.0/LiveDlrm.Perf.dll" "$@" ;;
  fuzz)  build_all; exec dotnet "$ROOT/tests/LiveDlrm.Fuzz/bin/$CONFIG/net10.0/LiveDlrm.Fuzz.dll" "$@" --corpus "$ROOT/tests/LiveDlrm.Fuzz/corpus" ;;
  pack)  pack_packages ;;
  build) build_all ;;
  clean) rm -rf artifacts; find engine interop tests perf samples -type d \( -name bin -o -name obj \) -prune -exec rm -rf {} + ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$verb" ] || [ "$verb" = help ] || exit 2 ;;
esac
