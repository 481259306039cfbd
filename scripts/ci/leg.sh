#!/usr/bin/env bash
# Configures, builds and runs one leg of the test suite in its own build dir, building only the
# targets that leg runs. Usage: scripts/ci/leg.sh LEG [ctest arguments...]
#   gcc    build/       g++, -Werror -Wshadow: everything; all tests (unit, fuzz, e2e; e2e need root)
#   asan   build-asan/  clang-14 -O1, -Werror -Wshadow -Wthread-safety, ASan+UBSan: unit tests
#                       and fuzz targets (the fuzz replay driver runs under the sanitizers)
#   tsan   build-tsan/  clang-14 -O1, ThreadSanitizer: the unit tests labelled "threaded"
#   format              scripts/ci/check-format.sh
# Compiles go through ccache when it is installed (scripts/install-deps.sh installs it), with its
# cache outside the clone so that the next clone's run reuses it:
#   CCACHE_DIR      default /var/cache/tunnelmesh/ccache when run as root (the test command is),
#                   else ccache's own default
#   CCACHE_MAXSIZE  default 6G (enough for the three legs; each leg prints the size)
# Paths are hashed relative to the clone, so a clone in another folder hits the same entries.
set -euo pipefail
cd "$(dirname "$0")/../.."
leg=${1:?usage: $0 gcc|asan|tsan|format [ctest arguments...]}
shift

jobs=$(nproc)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  if [ -z "${CCACHE_DIR:-}" ] && [ "$(id -u)" -eq 0 ]; then
    export CCACHE_DIR=/var/cache/tunnelmesh/ccache
  fi
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-6G} CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
fi

# configure DIR CMAKE_ARGS...: a fresh dir gets the given compilers; later runs keep the cache.
configure() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" "$@" >/dev/null
}

# The sanitizer legs build with -O1 (what the sanitizers' docs advise) and line tables instead of
# full debug info: reports keep their file:line stacks and objects are half the size. A heavy file
# compiles in about 3/4 of the time (coordinator.cc under ASan: 37 s against 42-50 s with -O2 -g),
# though a whole cold asan leg took about as long as before (24m16s against 24m57s).
san_flags="-O1 -gline-tables-only -DNDEBUG"
clang_args=(-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DTM_WERROR=ON
            -DTM_BENCH=OFF "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$san_flags"
            "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$san_flags")
supp="$PWD/scripts/ci"

# compile DIR [TARGETS...]: ninja, then how many compiles ccache answered (CI shows whether its
# cache outlived the last run).
compile() {
  local dir=$1
  shift
  # A failed build must not leave an earlier run's list of failed tests for failures.sh.
  rm -f "$dir/Testing/Temporary/LastTestsFailed.log"
  if [ ${#launcher[@]} -ne 0 ]; then ccache -z >/dev/null; fi
  ninja -C "$dir" -j"$jobs" "$@"
  if [ ${#launcher[@]} -ne 0 ]; then
    ccache --print-stats | awk -v dir="$dir" '
      /^(direct|preprocessed)_cache_hit\t/ { hits += $2 }
      /^cache_miss\t/ { misses = $2 }
      /^cache_size_kibibyte\t/ { size = $2 }
      END {
        where = ENVIRON["CCACHE_DIR"] == "" ? "its default folder" : ENVIRON["CCACHE_DIR"]
        printf "%s: ccache answered %d of %d compiles (cache %d MiB in %s)\n", dir, hits,
               hits + misses, size / 1024, where
      }'
  fi
}

# run_ctest ARGS...: ctest in the current build dir, its output also kept in ctest-output.log for
# scripts/ci/failures.sh (with ctest's own list of failed tests).
run_ctest() {
  ctest "$@" 2>&1 | tee ctest-output.log
}

case "$leg" in
  gcc)
    # The same dir as scripts/build.sh (the plain build), with warnings as errors; CC/CXX pick g++
    # when the dir is new (Debian's default compiler, so both scripts agree on it).
    CC=gcc CXX=g++ configure build -DTM_WERROR=ON
    compile build
    cd build
    # Unit and fuzz tests run two at a time; e2e tests are RUN_SERIAL, so they run alone.
    run_ctest --output-on-failure --timeout 600 -j"$jobs" "$@"
    ;;
  asan)
    configure build-asan "${clang_args[@]}" -DTM_SANITIZE=ON
    compile build-asan tm_unit_tests tm_fuzz_targets
    cd build-asan
    # detect_leaks: LeakSanitizer runs at exit of every test process. halt_on_error: the first
    # UBSan report fails the test (the code is also built with -fno-sanitize-recover=undefined).
    ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:check_initialization_order=1 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run_ctest --output-on-failure --timeout 600 -j"$jobs" -L 'unit|fuzz' "$@"
    ;;
  tsan)
    configure build-tsan "${clang_args[@]}" -DTM_TSAN=ON
    compile build-tsan tm_threaded_tests
    cd build-tsan
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp" \
      run_ctest --output-on-failure --timeout 600 -j"$jobs" -L threaded "$@"
    ;;
  format)
    bash scripts/ci/check-format.sh
    ;;
  *)
    echo "leg.sh: unknown leg '$leg' (gcc, asan, tsan or format)" >&2
    exit 2
    ;;
esac
