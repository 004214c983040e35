#!/bin/sh
# Installs what the Boot module builds and tests against: the host decompressors for bzImage
# payloads (-dev libraries) and the CLIs the tests use to compress synthetic payloads exactly as
# the kernel build does. Idempotent: installs only what is missing.
set -eu
packages="zlib1g-dev liblzma-dev liblz4-dev libzstd-dev gzip xz-utils lz4 zstd bzip2 gcc"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $missing
fi
