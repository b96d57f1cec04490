#!/usr/bin/env bash
# Installs Debian's `prometheus` package (promtool and the server) when promtool is
# missing. Idempotent: a machine that has promtool is left alone. CI runs as root with no
# terminal, so apt must not ask anything.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# --no-install-recommends: the server and promtool only, not the node exporter and friends.
$SUDO apt-get install -y -q --no-install-recommends prometheus
# The package enables and starts a system-wide Prometheus on :9090; the tests start their
# own on random loopback ports and need none running.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null
