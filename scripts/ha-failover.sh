#!/usr/bin/env bash
# HA failover times: three `rotor run` replicas with `[ha]` (lease 3 s) on a private
# OpenBao, the leader killed with `kill -9` again and again (each killed replica started
# again), printing every failover and the median and p99 of kill-to-new-leader and
# kill-to-its-first-commit.
#
#   scripts/ha-failover.sh              # 50 kills
#   ROTOR_HA_KILLS=200 scripts/ha-failover.sh
#
# Needs `bao` (`bash .ci/setup-openbao.sh`). Exits non-zero when a failover broke its bound.
set -euo pipefail

cd "$(dirname "$0")/.."
export ROTOR_HA_KILLS="${ROTOR_HA_KILLS:-50}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "ha failover: ${ROTOR_HA_KILLS} kills"
status=0
export RUST_BACKTRACE=0
cargo test --locked --test tests -- --exact ha::failover_times_over_repeated_kill_9_of_the_leader \
    --nocapture >"$out" 2>&1 || status=$?

grep -E '^ha: failover over' "$out" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status); the test's output:"
    sed -n '/panicked at/,$p' "$out" | head -40
    exit "$status"
fi
