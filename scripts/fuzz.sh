#!/usr/bin/env bash
# Long fuzzing run: every property-based fuzz target with many cases, then one line per
# target with the cases run and the failures found.
#
#   scripts/fuzz.sh            # 100000 cases per target
#   scripts/fuzz.sh 5000       # another count
#
# The targets are the tests in tests/suite/fuzz.rs (config trees and byte mutations, the
# admin API typed and on the wire, the mount scanner) and the embedded store's `mod fuzz`
# (damaged store files). CI runs the same tests with small default counts; this script
# only raises ROTOR_FUZZ_CASES. A failure is shrunk by proptest, printed with its minimal
# input, and saved in the `.proptest-regressions` file beside the test: commit it, so
# every later run replays it first. Runs that fail do not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."

cases="${1:-100000}"
case "$cases" in
'' | *[!0-9]*)
    echo "usage: $0 [CASES_PER_TARGET]" >&2
    exit 64
    ;;
esac
export ROTOR_FUZZ_CASES="$cases"
export CARGO_TERM_COLOR=never
# A failing case panics many times while proptest shrinks it; backtraces would make that
# slow and bury the minimal input.
export RUST_BACKTRACE=0

log="$(mktemp -t rotor-fuzz.XXXXXX)"
trap 'rm -f "$log"' EXIT

status=0
echo "== fuzz: $cases cases per target (log: $log while running)"
cargo test --locked --test tests fuzz:: -- --nocapture 2>&1 | tee -a "$log" || status=1
cargo test --locked --lib store::embedded::fuzz -- --nocapture 2>&1 | tee -a "$log" || status=1

echo
echo "== fuzz summary (cases include replayed regressions and shrink steps)"
grep -E '^fuzz target=' "$log" | sed 's/^fuzz //' || true
grep -E '^fuzz (api_raw|store_records)' "$log" || true
if grep -q 'minimal failing input' "$log"; then
    echo
    echo "== minimal failing inputs"
    grep -E -A30 'Test failed|minimal failing input' "$log"
fi
exit "$status"
