#!/usr/bin/env bash
# Start-up at scale with hibernating rotation actors: seeds an embedded store with N
# store-only secrets (`[[secret_sets]]`, N/100 tenants x 100 keys, an interval policy whose
# jitter spreads them over a day) by a first run of the release binary, stops it, then
# measures the second start: time to /readyz, RSS once ready, rotor's CPU over 30 s of idle,
# and the bytes each idle secret costs, ((RSS_N - RSS_small) / (N - small)) against the same
# measurement of SMALL secrets (default 1,000). Prints one line per figure; run it once per
# N (10000, 100000, 1000000).
#
# Seeding runs in steps of at most SEED_STEP secrets (default 250,000): each first run
# adds the next tenants to tenants.txt and writes only their first versions, so the
# first-start peak is bounded by the step, not by N (a single first run of 1,000,000 would
# peak far above 10 GB). The peak RSS (VmHWM) of the seeding runs is printed too.
#
# Usage: scripts/scale-start.sh N      (ROTOR_BIN=path skips the build)
# Also: SMALL (default 1000), IDLE_SECONDS (default 30), SEED_STEP (default 250000),
# KEEP=1 keeps the working directories.
set -euo pipefail

n="${1:?usage: scale-start.sh N}"
small="${SMALL:-1000}"
idle_seconds="${IDLE_SECONDS:-30}"
seed_step="${SEED_STEP:-250000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"
rotor_bin "$root"
works=()
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    for w in "${works[@]}"; do
        if [[ -z "${KEEP:-}" ]]; then rm -rf "$w"; else echo "files kept in $w" >&2; fi
    done
}
trap cleanup EXIT

# Writes tenants.txt for the first `count` secrets (100 keys per tenant) into $1.
write_tenants() {
    local dir="$1" count="$2"
    local keys=100
    (( count < keys )) && keys="$count"
    local tenants=$(( (count + keys - 1) / keys ))
    seq -f 't%07g' 1 "$tenants" >"$dir/tenants.txt"
}

# Writes rotor.toml (and tenants.txt) for `count` secrets into directory $1.
write_config() {
    local dir="$1" count="$2" port="$3"
    local keys=100
    (( count < keys )) && keys="$count"
    write_tenants "$dir" "$count"
    {
        embedded_rotor "$port"
        cat <<EOF
[policies.daily]
interval = "1d"
jitter = "1d"
grace = "1h"
generator = { type = "token", bytes = 32 }

[[secret_sets]]
tenants_file = "tenants.txt"
policy = "daily"
target = { type = "none" }
EOF
        printf 'keys = ['
        awk -v n="$keys" 'BEGIN { for (k = 0; k < n; k++) printf "%s\"k%03d\"", (k ? ", " : ""), k }'
        printf ']\n'
    } >"$dir/rotor.toml"
}

# Starts rotor in $1 on port $2 and waits for /readyz; sets pid and ready_s (seconds to
# ready). Not called in a command substitution: that would set them in a subshell.
start_rotor() {
    local dir="$1" port="$2"
    local t0
    t0=$(date +%s.%N)
    (cd "$dir" && RUST_LOG=warn exec "$bin" run -c rotor.toml >>rotor.log 2>&1) &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/rotor.log" >&2; exit 1; }
        sleep 0.05
    done
    ready_s="$(echo "$(date +%s.%N) - $t0" | bc)"
}

stop_rotor() {
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# Seeds `count` secrets in a new directory (a first run until every first version is
# written), then measures a second start. Sets result to "ready_s rss_kib cpu_percent".
measure() {
    local count="$1"
    local dir
    dir="$(mktemp -d)"
    works+=("$dir")
    local port
    port="$(free_port)"
    write_config "$dir" "$count" "$port"
    local seeded=0 step hwm=0 seed_t0
    seed_t0=$(date +%s.%N)
    while (( seeded < count )); do
        step=$(( count - seeded < seed_step ? count - seeded : seed_step ))
        write_tenants "$dir" $(( seeded + step ))
        start_rotor "$dir" "$port"
        local url="http://127.0.0.1:$port"
        local auth="Authorization: Bearer $(cat "$dir/admin.token")"
        # The new secrets have their first versions once each counts a success.
        until [[ "$(curl -sf -H "$auth" "$url/metrics" | awk '/^secret_rotation_total\{/ && /outcome="succeeded"/ { s += $2 } END { print s + 0 }')" -ge "$step" ]]; do
            kill -0 "$pid" 2>/dev/null || { cat "$dir/rotor.log" >&2; exit 1; }
            sleep 1
        done
        local h
        h="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")"
        (( h > hwm )) && hwm="$h"
        stop_rotor
        seeded=$(( seeded + step ))
    done
    seed_s="$(echo "$(date +%s.%N) - $seed_t0" | bc)"
    seed_hwm_kib="$hwm"
    start_rotor "$dir" "$port"
    local ready="$ready_s"
    local rss
    rss="$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")"
    local tck cpu0 cpu1
    tck="$(getconf CLK_TCK)"
    cpu0="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
    sleep "$idle_seconds"
    cpu1="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
    local cpu
    cpu="$(echo "scale=2; 100 * ($cpu1 - $cpu0) / $tck / $idle_seconds" | bc)"
    stop_rotor
    result="$ready $rss $cpu"
}

measure "$small"
read -r ready_small rss_small _ <<<"$result"
measure "$n"
read -r ready_n rss_n cpu_n <<<"$result"
echo "secrets: $n (store seeded by first runs of at most $seed_step new secrets; the next start measured)"
echo "seeding: ${seed_s} s, peak RSS $(( seed_hwm_kib / 1024 )) MiB"
echo "time to ready: ${ready_n} s"
echo "RSS after ready: $(( rss_n / 1024 )) MiB ($small secrets: $(( rss_small / 1024 )) MiB, ready in ${ready_small} s)"
echo "idle CPU over ${idle_seconds} s: ${cpu_n}% of one core"
echo "bytes per idle secret: $(( (rss_n - rss_small) * 1024 / (n - small) ))"
