#!/bin/sh
# Installs what `make -C TestGuests` needs on Debian: a C compiler and binutils (the 32-bit
# guests are freestanding, so no gcc-multilib/i386 libc is needed), make, and the compressors
# the synthetic bzImages use. qemu-system-x86 is optional: only for checking guests by hand.
# Idempotent: installs only what is missing.
set -eu

need=""
check() { # check COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || need="$need $2"
}
check cc gcc
check ld binutils
check objcopy binutils
check make make
check gzip gzip
check xz xz-utils
check lzma xz-utils
check lz4 lz4
check zstd zstd
check bzip2 bzip2

if [ -z "$need" ]; then
    echo "TestGuests/setup.sh: build tools present"
    exit 0
fi
need=$(echo "$need" | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
    echo "TestGuests/setup.sh: missing packages:$need(run as root to install them)" >&2
    exit 1
fi
echo "TestGuests/setup.sh: installing$need"
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
