#!/usr/bin/env bash
# Emergency rotation at scale: starts the release binary with N store-only secrets of one
# tenant (default 100,000; `[[secret_sets]]`, one key list), waits until every first version
# is written, runs `POST /admin/secrets/rotate-all` over the tenant at RATE per second with
# CONCURRENCY at once, and while it runs hammers `GET /admin/jobs/{id}` with wrk (when
# installed: `apt-get install -y wrk`) to measure the API's latency under the job. Prints the
# first-start time, the job's rotation rate (from its start to `finishedAt`), done/failed,
# each secret rotated once (checked on a sample through the history route), wrk's p50/p99,
# and rotor's peak RSS, of the first start and of the job apart (the high-water mark is
# reset between them through /proc/PID/clear_refs).
#
# Usage: scripts/rotate-all-bench.sh [N]      (ROTOR_BIN=path skips the build)
# Also: RATE (default 10000), CONCURRENCY (default 256), WRK_SECONDS (default 10),
# WRK=0 to run without wrk (the rate alone), KEEP=1 to keep the working directory.
set -euo pipefail

n="${1:-100000}"
rate="${RATE:-10000}"
concurrency="${CONCURRENCY:-256}"
wrk_seconds="${WRK_SECONDS:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"
rotor_bin "$root"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$work"; else echo "files kept in $work" >&2; fi
}
trap cleanup EXIT

port="$(free_port)"
{
    embedded_rotor "$port"
    cat <<EOF
[runtime]
max_concurrent_rotations = $concurrency

EOF
    monthly_t1_secrets "$n"
} >"$work/rotor.toml"

cd "$work"
t_start=$(date +%s.%N)
RUST_LOG=warn "$bin" run -c rotor.toml >rotor.log 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
until curl -sf "$url/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat rotor.log >&2; exit 1; }
    sleep 0.2
done
token="$(cat admin.token)"
auth="Authorization: Bearer $token"
# Ready means every actor loaded; the first versions of new secrets are written after.
until [[ "$(curl -sf -H "$auth" "$url/metrics" | awk '/^secret_rotation_total\{/ && /outcome="succeeded"/ { s += $2 } END { print s + 0 }')" -ge "$n" ]]; do
    sleep 1
done
t_ready=$(date +%s.%N)
echo "first start: $n first versions written in $(echo "$t_ready - $t_start" | bc) s"

# rotor's CPU time (user + system, in clock ticks) before and after the job: with the wall
# time it says whether the job waits on the disk (fsyncs) or on the CPU.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
cpu0="$(cpu_ticks)"
# The first start's peak, then the high-water mark reset so the job's is measured alone.
start_peak="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")"
echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || echo "cannot reset the peak RSS: the job's includes the first start" >&2
answer="$(curl -sf -H "$auth" -H 'Content-Type: application/json' \
    -d "{\"tenantId\":\"t1\",\"ratePerSecond\":$rate,\"maxConcurrent\":$concurrency}" \
    "$url/admin/secrets/rotate-all")"
job="$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobId"])')"
echo "job $job: $n secrets at up to $rate/s, $concurrency at once"

wrk_out=""
if [[ "${WRK:-1}" != 0 ]] && command -v wrk >/dev/null; then
    wrk_out="$(wrk -t1 -c4 -d"${wrk_seconds}s" --latency -H "$auth" "$url/admin/jobs/$job" 2>&1 || true)"
fi
peak=0
while :; do
    view="$(curl -sf -H "$auth" "$url/admin/jobs/$job")"
    rss="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")"
    [[ "$rss" -gt "$peak" ]] && peak="$rss"
    if echo "$view" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["finishedAt"] else 1)'; then
        break
    fi
    sleep 0.5
done
cpu1="$(cpu_ticks)"
tck="$(getconf CLK_TCK)"
echo "$view" | python3 -c '
import json, sys
from datetime import datetime
v = json.load(sys.stdin)
s = datetime.fromisoformat(v["startedAt"].replace("Z", "+00:00"))
f = datetime.fromisoformat(v["finishedAt"].replace("Z", "+00:00"))
secs = (f - s).total_seconds()
rate = (v["done"] + v["failed"]) / secs
print("job %s: total %d done %d failed %d in %.1f s = %.0f rotations/s" % (v["state"], v["total"], v["done"], v["failed"], secs, rate))
'
echo "rotor CPU during the job: $(echo "scale=1; ($cpu1 - $cpu0) / $tck" | bc) s (user + system, all threads)"
# Exactly once: a sample of secrets, each with one job rotation in its history or journal.
twice=0
for k in $(awk -v n="$n" 'BEGIN { srand(7); for (i = 0; i < 50; i++) printf "k%06d\n", int(rand() * n) }'); do
    v="$(curl -sf -H "$auth" "$url/admin/secrets/versions/t1/$k")"
    count="$(echo "$v" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["versions"]))')"
    [[ "$count" -eq 2 ]] || twice=$((twice + 1))
done
echo "sample of 50 secrets: $twice with other than 2 versions (0 expected)"
if [[ -n "$wrk_out" ]]; then
    echo "$wrk_out" | awk '/Latency Distribution/ { d = 1 } d && /(50|99)%/ { print "GET /admin/jobs/{id} under the job: p" $1 " " $2 }
        /Requests\/sec/ { print "wrk requests/s: " $2 }'
else
    echo "no API latency figure (WRK=0, or wrk not installed: apt-get install -y wrk)"
fi
echo "rotor peak RSS: first start $((start_peak / 1024)) MiB, during the job $((peak / 1024)) MiB"
