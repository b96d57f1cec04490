#!/usr/bin/env bash
# A long kill campaign: the e2e test that kills rotor with `kill -9` at random instants
# (after readiness and during start-up) and checks the store and the target's side effects
# after every kill, run with many more kills than CI's 20.
#
#   scripts/kill-campaign.sh            # 1000 kills
#   ROTOR_KILLS=200 scripts/kill-campaign.sh
#   ROTOR_KILL_SEED=<seed> scripts/kill-campaign.sh   # replays a failed campaign
#
# Prints the campaign's summary (kills, kills before readiness, rotations, steps seen by
# the target, the seed) and exits non-zero when an invariant broke.
set -euo pipefail

cd "$(dirname "$0")/.."
export ROTOR_KILLS="${ROTOR_KILLS:-1000}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "kill campaign: ${ROTOR_KILLS} kills${ROTOR_KILL_SEED:+, seed ${ROTOR_KILL_SEED}}"
status=0
export RUST_BACKTRACE=0
cargo test --locked --test tests -- --exact e2e::kill_9_at_random_instants_loses_nothing \
    --nocapture >"$out" 2>&1 || status=$?

grep -E '^(seed|kill campaign:)' "$out" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status); the test's output:"
    sed -n '/panicked at/,$p' "$out" | head -40
    exit "$status"
fi
echo "passed"
