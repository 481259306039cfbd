#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (run as root: the e2e and netns tests need it):
# installs what is needed, then runs the legs one after another, each in its own build dir, and
# prints how long each took. A failing leg does not stop the others; the exit status is non-zero if
# any failed. Legs (scripts/ci/leg.sh says exactly what each builds and runs):
#   format  clang-format check (reports only until the tree is formatted)
#   gcc     g++ -Werror: everything, all tests including e2e           (build/)
#   asan    clang-14 -Werror -Wthread-safety, ASan+UBSan: unit + fuzz   (build-asan/)
#   tsan    clang-14 ThreadSanitizer: the "threaded" unit tests         (build-tsan/)
# TM_LEGS picks legs, e.g. TM_LEGS="gcc" or TM_LEGS="asan tsan" (default: all four). Arguments go
# to every leg's ctest, e.g. scripts/test.sh -R packet.
set -euo pipefail
cd "$(dirname "$0")/.."
# Installing packages and the end-to-end tests need root: a normal user goes through sudo.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E bash "$PWD/scripts/test.sh" "$@"; fi
  echo "test: needs root to install packages and run the end-to-end tests: run it as root" >&2
  exit 1
fi
legs=${TM_LEGS:-format gcc asan tsan}

bash scripts/install-deps.sh

passed=0
failed=0
summary=()
failed_legs=()
for leg in $legs; do
  echo "=== leg $leg"
  start=$SECONDS
  if bash scripts/ci/leg.sh "$leg" "$@"; then
    result=ok
    passed=$((passed + 1))
  else
    result=FAILED
    failed=$((failed + 1))
    failed_legs+=("$leg")
  fi
  took=$((SECONDS - start))
  summary+=("$(printf '%-7s %-7s %4dm%02ds' "$leg" "$result" $((took / 60)) $((took % 60)))")
  echo "=== leg $leg: $result in $((took / 60))m$((took % 60))s"
done

# The failed tests come last, after every leg, where the end of a long CI log shows them.
for leg in "${failed_legs[@]}"; do
  case "$leg" in
    gcc) dir=build ;;
    asan | tsan) dir=build-$leg ;;
    *) continue ;;
  esac
  echo "=== leg $leg failed:"
  bash scripts/ci/failures.sh "$dir"
done
echo "=== legs (total ${SECONDS}s including the install):"
printf '  %s\n' "${summary[@]}"
echo "legs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
