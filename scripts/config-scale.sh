#!/usr/bin/env bash
# Configuration load at scale: generates configs declaring 100,000 and 1,000,000 secrets,
# both as `[[secrets]]` tables and as one `[[secret_sets]]` (tenants file x keys), runs
# `rotor check` (release build) on each RUNS times under /usr/bin/time -v and prints the
# median wall time and median peak RSS of each.
#
# Usage: scripts/config-scale.sh [RUNS]    (default 3; ROTOR_BIN=path skips the build)
# Also: ONLY_SIZES="100000" to run fewer sizes, KEEP=1 to keep the generated files.
set -euo pipefail

runs="${1:-3}"
sizes="${ONLY_SIZES:-100000 1000000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${ROTOR_BIN:-}"
if [[ -z "$bin" ]]; then
    (cd "$root" && cargo build --release --locked --bin rotor >&2)
    bin="$root/target/release/rotor"
fi
work="$(mktemp -d)"
if [[ -z "${KEEP:-}" ]]; then
    trap 'rm -rf "$work"' EXIT
else
    echo "files kept in $work" >&2
fi

header='[policies.tenant_db]
interval = "30d"
grace = "2h"
jitter = "1d"
generator = { type = "password", length = 32 }
'

# N secrets as N [[secrets]] tables: tenants of 100 keys each.
gen_tables() {
    local n="$1" out="$2"
    {
        printf '%s' "$header"
        awk -v n="$n" 'BEGIN {
            for (i = 0; i < n; i++)
                printf "[[secrets]]\ntenant = \"tenant%05d\"\nkey = \"key%02d\"\npolicy = \"tenant_db\"\ntarget = { type = \"none\" }\n", int(i / 100), i % 100
        }'
    } >"$out"
}

# The same N secrets as one [[secret_sets]]: a tenants file of N/100 lines x 100 keys.
gen_set() {
    local n="$1" out="$2" tenants="$3"
    awk -v n="$n" 'BEGIN { print "# one tenant per line"; for (t = 0; t < n / 100; t++) printf "tenant%05d\n", t }' >"$tenants"
    {
        printf '%s' "$header"
        printf '[[secret_sets]]\ntenants_file = "%s"\nkeys = [' "$(basename "$tenants")"
        awk 'BEGIN { for (k = 0; k < 100; k++) printf "%s\"key%02d\"", (k ? ", " : ""), k }'
        printf ']\npolicy = "tenant_db"\ntarget = { type = "none" }\n'
    } >"$out"
}

# Prints "WALL_SECONDS MAX_RSS_KIB" of one `rotor check` run; fails if the check fails.
measure() {
    local file="$1" log="$work/time.log"
    if ! /usr/bin/time -v "$bin" check "$file" >"$work/out.log" 2>"$log"; then
        cat "$work/out.log" "$log" >&2
        return 1
    fi
    awk '
        /Elapsed \(wall clock\)/ { n = split($NF, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; wall = s }
        /Maximum resident set size/ { rss = $NF }
        END { printf "%.2f %d\n", wall, rss }
    ' "$log"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-26s %10s %12s %10s\n' form secrets "wall (s)" "RSS (MiB)"
for n in $sizes; do
    gen_tables "$n" "$work/tables-$n.toml"
    gen_set "$n" "$work/set-$n.toml" "$work/tenants-$n.txt"
    for form in tables set; do
        file="$work/$form-$n.toml"
        walls=() rss=()
        for _ in $(seq "$runs"); do
            read -r w r < <(measure "$file")
            walls+=("$w") rss+=("$r")
        done
        w=$(printf '%s\n' "${walls[@]}" | median)
        r=$(printf '%s\n' "${rss[@]}" | median)
        size=$(du -m "$file" | cut -f1)
        printf '%-26s %10d %12s %10d\n' "$form (${size} MB file)" "$n" "$w" "$((r / 1024))"
    done
done
