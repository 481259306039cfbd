#!/usr/bin/env bash
# Says which tests of a leg failed and how, from what the leg left in its build dir: ctest's list of
# failed tests and the leg's ctest output (leg.sh keeps it in ctest-output.log). A CI log is often
# read from its end only, so scripts/test.sh prints this after all legs.
# Usage: scripts/ci/failures.sh BUILD_DIR [LINES]   LINES of output per failed test (default 20);
# the output of at most 3 tests is shown, every failed test is named.
set -euo pipefail
dir=${1:?usage: $0 BUILD_DIR [LINES]}
lines=${2:-20}
list="$dir/Testing/Temporary/LastTestsFailed.log"
out="$dir/ctest-output.log"

if [ ! -s "$list" ]; then
  echo "  (no failed test in $list: the leg failed before or outside ctest; see its output)"
  exit 0
fi

shown=0
while IFS= read -r entry; do
  name=${entry#*:}
  if [ "$shown" -ge 3 ] || [ ! -f "$out" ]; then continue; fi
  shown=$((shown + 1))
  how=$(grep -m1 -oE "Test +#[0-9]+: $name \.* *\*\*\*[A-Za-z ]+" "$out" |
    sed 's/.*\*\*\*//; s/ *$//') || true
  echo "--- $name (${how:-failed}): the last $lines lines of its output"
  # ctest --output-on-failure prints a failed test's output right after its result line, up to the
  # next "Start N:" or result line of the parallel run.
  awk -v name="$name" '
    $0 ~ ("Test +#[0-9]+: " name " ") && /\*\*\*/ { grab = 1; next }
    grab && (/^ *Start +[0-9]+: / || /^ *[0-9]+\/[0-9]+ Test +#/ || /^[0-9]+% tests passed/) {
      grab = 0
    }
    grab { print }
  ' "$out" | grep -v '^[[:space:]]*$' | tail -n "$lines"
done < "$list"

echo "failed tests:"
sed 's/^[0-9]*:/  /' "$list"
