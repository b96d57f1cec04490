#!/usr/bin/env bash
# A first start of N new store-only secrets (default 100,000; no state in the store yet),
# with the release binary: the bulk path (`[runtime] first_versions_in_bulk = true`, the
# default) against the rotation actors alone (`false`), RUNS times each (default 3), in
# alternation, each on a fresh store. Prints per run the time until /readyz answers, the
# time until every first version is written (the sum of
# `secret_rotation_total{outcome="succeeded"}` reaches N) and rotor's peak RSS (VmHWM),
# then the median of each per mode.
#
# Usage: scripts/first-start.sh [N]      (ROTOR_BIN=path skips the build; RUNS=1 for one)
set -euo pipefail

n="${1:-100000}"
runs="${RUNS:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"
rotor_bin "$root"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# One first start in a fresh directory; prints "ready_s written_s peak_kib".
first_start() {
    local bulk="$1" dir port url t0 t_ready t_done peak rss
    dir="$work/$bulk-$RANDOM"
    mkdir -p "$dir"
    port="$(free_port)"
    {
        embedded_rotor "$port"
        cat <<EOF
[runtime]
first_versions_in_bulk = $bulk

EOF
        monthly_t1_secrets "$n"
    } >"$dir/rotor.toml"
    (
        cd "$dir"
        RUST_LOG=info exec "$bin" run -c rotor.toml >rotor.log 2>&1
    ) &
    pid=$!
    t0=$(date +%s.%N)
    url="http://127.0.0.1:$port"
    peak=0
    sample_rss() {
        rss="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)"
        if [[ "$rss" -gt "$peak" ]]; then peak="$rss"; fi
    }
    until curl -sf "$url/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/rotor.log" >&2; exit 1; }
        sample_rss
        sleep 0.1
    done
    t_ready=$(date +%s.%N)
    local auth="Authorization: Bearer $(cat "$dir/admin.token")"
    until [[ "$(curl -sf -H "$auth" "$url/metrics" | awk '/^secret_rotation_total\{/ && /outcome="succeeded"/ { s += $2 } END { print s + 0 }')" -ge "$n" ]]; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/rotor.log" >&2; exit 1; }
        sample_rss
        sleep 0.2
    done
    t_done=$(date +%s.%N)
    sample_rss
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    rm -rf "$dir"
    echo "$(echo "$t_ready - $t0" | bc) $(echo "$t_done - $t0" | bc) $peak"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

declare -A results
for ((r = 1; r <= runs; r++)); do
    for bulk in false true; do
        out="$(first_start "$bulk")"
        results[$bulk]+="$out"$'\n'
        read -r ready written peak <<<"$out"
        printf 'run %d %-7s ready %6.1f s  all %d first versions written %6.1f s  peak RSS %5d MiB\n' \
            "$r" "$([[ $bulk == true ]] && echo bulk || echo actors)" "$ready" "$n" "$written" "$((peak / 1024))"
    done
done
for bulk in false true; do
    name="$([[ $bulk == true ]] && echo "bulk path" || echo "actors alone")"
    rows="${results[$bulk]}"
    ready="$(echo -n "$rows" | awk '{ print $1 }' | median)"
    written="$(echo -n "$rows" | awk '{ print $2 }' | median)"
    peak="$(echo -n "$rows" | awk '{ print $3 }' | median)"
    printf 'median of %d, %s: ready %.1f s, all %d first versions written %.1f s, peak RSS %d MiB\n' \
        "$runs" "$name" "$ready" "$n" "$written" "$((${peak%.*} / 1024))"
done
