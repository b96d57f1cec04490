# Shared by the measuring scripts in this folder: sourced (`. "$root/scripts/lib.sh"`),
# never run on its own.

# Sets `bin` to $ROTOR_BIN when set, else to a release build of the checkout at $1; made
# absolute, because the scripts change directory before they start it.
rotor_bin() {
    bin="${ROTOR_BIN:-}"
    if [[ -z "$bin" ]]; then
        (cd "$1" && cargo build --release --locked --bin rotor >&2)
        bin="$1/target/release/rotor"
    fi
    bin="$(realpath "$bin")"
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The `[server]` and `[store]` TOML of a rotor listening on 127.0.0.1:$1 with an embedded
# store, its files (admin.token, rotor.redb, master.key) in the directory it is started in.
embedded_rotor() {
    cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_token_file = "admin.token"

[store]
type = "embedded"
path = "rotor.redb"
master_key_file = "master.key"

TOML
}

# The TOML of a monthly store-only policy and one secret set of tenant `t1` with the keys
# k000000 to k(N-1), N = $1.
monthly_t1_secrets() {
    cat <<TOML
[policies.monthly]
interval = "30d"
grace = "1h"
generator = { type = "token", bytes = 32 }

[[secret_sets]]
tenants = ["t1"]
policy = "monthly"
target = { type = "none" }
TOML
    printf 'keys = ['
    awk -v n="$1" 'BEGIN { for (k = 0; k < n; k++) printf "%s\"k%06d\"", (k ? ", " : ""), k }'
    printf ']\n'
}
