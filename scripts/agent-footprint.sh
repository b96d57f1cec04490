#!/usr/bin/env bash
# The idle footprint of `rotor agent`, the sidecar that runs in every workload pod: the
# release binary watches a kubelet-style mount (two mapped files with their version
# markers) and reports every heartbeat to a minimal local stand-in for rotor's consumer
# routes; after a warm-up the script reads the agent's RSS from /proc and its CPU time over
# the measured window, and prints one line of figures.
#
#   scripts/agent-footprint.sh              # 60 s window, heartbeat 5s (the default)
#   scripts/agent-footprint.sh 30 1s        # 30 s window, heartbeat 1s
#
# ROTOR_BIN=path/to/rotor skips the release build. Needs python3 (the stand-in).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
heartbeat="${2:-5s}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [HEARTBEAT]" >&2
    exit 64
    ;;
esac

bin="${ROTOR_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --locked --quiet
    bin="target/release/rotor"
fi

work="$(mktemp -d -t rotor-agent-footprint.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The mount, as kubelet lays it out: a generation directory, `..data`, visible links.
gen="$work/mnt/..2026_01_01_00_00_00.1"
mkdir -p "$gen"
printf 'footprint-password-value' >"$gen/password"
printf '1' >"$gen/password_version"
printf 'footprint-api-key-value' >"$gen/api_key"
printf '1' >"$gen/api_key_version"
ln -s "..2026_01_01_00_00_00.1" "$work/mnt/..data"
for f in password password_version api_key api_key_version; do
    ln -s "..data/$f" "$work/mnt/$f"
done
(umask 077 && printf 'footprint-token\n' >"$work/consumer.token")

# The stand-in: answers every report 200 and counts them.
port_file="$work/port"
python3 - "$port_file" "$work/reports" <<'PY' &
import http.server, sys
port_file, count_file = sys.argv[1], sys.argv[2]
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        count += 1
        with open(count_file, "w") as f:
            f.write(str(count))
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
with open(port_file, "w") as f:
    f.write(str(s.server_address[1]))
s.serve_forever()
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
port="$(cat "$port_file")"

cat >"$work/agent.toml" <<EOF
[agent]
rotor_url = "http://127.0.0.1:$port"
token_file = "$work/consumer.token"
consumer_id = "footprint-0"
heartbeat = "$heartbeat"

[[mounts]]
path = "$work/mnt"
critical = ["password"]
reload = { type = "http", url = "http://127.0.0.1:$port/-/reload" }
files = { "password" = "tenant1/database_credentials", "api_key" = "tenant1/api_keys" }
EOF

RUST_LOG=warn "$bin" agent -c "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")

# Warm-up: start, first scan, first report.
sleep 3
kill -0 "$agent" 2>/dev/null || {
    echo "the agent exited:" >&2
    cat "$work/agent.log" >&2
    exit 1
}
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
hz="$(getconf CLK_TCK)"
reports_before="$(cat "$work/reports" 2>/dev/null || echo 0)"
t0="$(ticks)"
start="$(date +%s.%N)"
sleep "$seconds"
t1="$(ticks)"
end="$(date +%s.%N)"
reports_after="$(cat "$work/reports" 2>/dev/null || echo 0)"
rss="$(awk '/^VmRSS/ {print $2}' "/proc/$agent/status")"
hwm="$(awk '/^VmHWM/ {print $2}' "/proc/$agent/status")"
threads="$(awk '/^Threads/ {print $2}' "/proc/$agent/status")"
cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$start" -v e="$end" \
    'BEGIN {printf "%.3f", (b - a) / hz / (e - s) * 100}')"
size="$(stat -c %s "$bin")"
echo "agent footprint: seconds=$seconds heartbeat=$heartbeat rss_kib=$rss peak_rss_kib=$hwm" \
    "threads=$threads cpu_percent=$cpu cpu_ticks=$((t1 - t0)) reports=$((reports_after - reports_before))" \
    "binary_bytes=$size"
if grep -q . "$work/agent.log"; then
    echo "agent log (warn and above):"
    cat "$work/agent.log"
fi
