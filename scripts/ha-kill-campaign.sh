#!/usr/bin/env bash
# HA kill campaign: three `rotor run` replicas with `[ha]` (lease 3 s) on a private OpenBao,
# 100 secrets rotating every 30 s and API rotations through random replicas, the leader
# killed with `kill -9` at random instants again and again (each killed replica started
# again). After every kill the test checks a new leader within the lease plus one renew
# interval, exactly one current version per secret, no version promoted twice and no
# rotation finished twice; at the end every accepted rotation (202) in the history. Prints
# every kill, then the failover median and p99 and the client's counts.
#
#   scripts/ha-kill-campaign.sh                          # 1,000 kills
#   ROTOR_HA_CAMPAIGN_KILLS=100 scripts/ha-kill-campaign.sh
#   ROTOR_HA_CAMPAIGN_SEED=1234 scripts/ha-kill-campaign.sh   # replay a run's choices
#
# Needs `bao` (`bash .ci/setup-openbao.sh`). Exits non-zero when an invariant or a
# failover bound broke.
set -euo pipefail

cd "$(dirname "$0")/.."
export ROTOR_HA_CAMPAIGN_KILLS="${ROTOR_HA_CAMPAIGN_KILLS:-1000}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "ha kill campaign: ${ROTOR_HA_CAMPAIGN_KILLS} kills"
status=0
export RUST_BACKTRACE=0
cargo test --locked --test tests -- --exact ha::kill_9_campaign_loses_no_rotation_and_promotes_nothing_twice \
    --nocapture >"$out" 2>&1 || status=$?

grep -E '^ha campaign: [0-9]+ kills' "$out" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status); the test's output:"
    grep -E '^ha campaign: kill' "$out" | tail -3 || true
    sed -n '/panicked at/,$p' "$out" | head -40
    exit "$status"
fi
