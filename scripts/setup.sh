#!/usr/bin/env bash
# Installs everything Vireo's build and tests need on a Debian 12 machine. Idempotent and quiet;
# safe to run on every CI run. The Swift toolchain itself (6.1 or newer) must already be on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: no 'swift' on PATH: install a Swift 6.1+ toolchain for Linux first (swift.org)" >&2
    exit 1
fi

packages=(
    # build: C libraries behind the bzImage decompressors (and libssl-dev: libcrypto's SHA-256 for the
    # kernel payload cache), compiler for the C shim and test guests
    make gcc gcc-multilib binutils pkg-config zlib1g-dev liblzma-dev liblz4-dev libzstd-dev libsqlite3-dev libssl-dev
    # libxml2-dev: the XML parser's own error text (line, column, message) for domain XML
    libxml2-dev
    # test guests: compressors the synthetic bzImages are built with
    gzip xz-utils lz4 zstd bzip2
    # storage interop tests and benchmarks compare with the real qemu-img; VMM benchmark with QEMU
    qemu-utils qemu-system-x86
    # firmware boot (`vireo run --firmware bios|uefi`): Debian's SeaBIOS and OVMF
    seabios ovmf
    # `vireo install --cloud-init`: the NoCloud seed ISO (genisoimage; its isoinfo reads it back in tests)
    genisoimage
    # misc tools the scripts use
    cpio python3 time curl
    # user networking (`--net user`, libvirt's <interface type='user'>): passt
    passt
    # device e2e: an ext4 disk made on the host, a TAP in a network namespace, a ping across it
    e2fsprogs iproute2 iputils-ping
    # CLI tests: unshare/setpriv (network namespaces, dropped capabilities), losetup (block devices)
    util-linux mount
    # storage pools of type logical (`vireo pool-define-as NAME logical`): LVM's tools
    lvm2
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Component setup scripts add what their own tests need.
for extra in scripts/setup-*.sh TestGuests/setup.sh; do
    [ -x "$extra" ] || [ -f "$extra" ] || continue
    bash "$extra"
done

if [ ! -e /dev/kvm ]; then
    echo "setup: warning: /dev/kvm is missing; VM tests will fail (enable KVM: modprobe kvm_intel/kvm_amd)" >&2
elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    echo "setup: warning: no access to /dev/kvm; add yourself to the 'kvm' group" >&2
fi
