#!/bin/sh
# Installs what the Storage tests need: the real qemu-img/qemu-io (Debian qemu-utils) to compare against.
# Idempotent and quiet; called by scripts/setup.sh.
set -eu
if command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq qemu-utils >/dev/null
