#!/usr/bin/env bash
# Failover of the Vault store across the nodes of a 3-node OpenBao raft cluster: runs the
# test that kills the active node mid-rotation (`vault_cluster::`) several times, each on
# a fresh cluster, and prints each run's handover (from the kill to rotor's next successful
# commit, by the nodes' timestamps) and the time until every secret was promoted twice more,
# then the medians.
#
#   scripts/vault-failover.sh        # 5 runs
#   scripts/vault-failover.sh 11     # 11 runs
#
# Needs OpenBao's `bao` (`bash .ci/setup-openbao.sh`). Exits non-zero when a run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-5}"
case "$runs" in
'' | *[!0-9]* | 0)
    echo "usage: $0 [RUNS]" >&2
    exit 64
    ;;
esac

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
export CI=true RUST_BACKTRACE=0
cargo test --locked --test tests --no-run --quiet
handovers=()
carried=()
for i in $(seq 1 "$runs"); do
    status=0
    cargo test --locked --quiet --test tests -- --exact \
        vault_cluster::the_active_node_killed_mid_rotation_rotor_carries_on_through_another \
        --nocapture >"$out" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        echo "run $i FAILED (exit $status):"
        sed -n '/panicked at/,$p' "$out" | head -40
        exit "$status"
    fi
    line="$(grep -E '^vault_cluster figures:' "$out")"
    h="$(sed -E 's/.*handover_ms=([0-9]+).*/\1/' <<<"$line")"
    c="$(sed -E 's/.*carried_on_ms=([0-9]+).*/\1/' <<<"$line")"
    echo "run $i: handover ${h} ms, every secret promoted twice more ${c} ms after the kill"
    handovers+=("$h")
    carried+=("$c")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }
echo "vault failover over ${runs} runs: handover median $(median "${handovers[@]}") ms" \
    "(min $(printf '%s\n' "${handovers[@]}" | sort -n | head -1), max $(printf '%s\n' "${handovers[@]}" | sort -n | tail -1));" \
    "two more promotions of every secret median $(median "${carried[@]}") ms"
