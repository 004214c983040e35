#!/usr/bin/env bash
# Builds the stock-Debian-kernel test guest: Debian's own linux-image-amd64 kernel (its xz
# bzImage, unchanged) and an uncompressed initramfs with busybox-static, the virtio modules from
# the same package and guest/debian/init. Used by tests/e2e/linux-debian.sh and the boot-time
# benchmark. Cached in ${VIREO_DEBIAN_DIR:-~/.cache/vireo/debian}; prints on stdout:
#   VIREO_DEBIAN_KERNEL=<vmlinuz>  VIREO_DEBIAN_INITRAMFS=<cpio>  VIREO_DEBIAN_RELEASE=<uname -r>
set -euo pipefail
readonly RECIPE=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_DEBIAN_DIR:-$HOME/.cache/vireo/debian}
DK_LOG_PREFIX=build-debian-guest
# shellcheck source=lib/debian-kernel.sh
source "$repo/scripts/lib/debian-kernel.sh"
log() { echo "build-debian-guest: $*" >&2; }
modules=(virtio_pci virtio_blk)

mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9
debian_kernel_fetch "$cache"
busybox_deb=$(debian_package_fetch busybox-static "$cache/debs")
key=$( { echo "recipe $RECIPE"; basename "$DEBIAN_KERNEL_DIR"; basename "$busybox_deb"; echo "${modules[*]}"
         cat "$repo/guest/debian/init"; } | sha256sum | cut -c1-16)
dir=$cache/guest-$key
if [ ! -e "$dir/.complete" ]; then
    log "building the initramfs for $DEBIAN_KERNEL_RELEASE (busybox-static, ${modules[*]})"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    debian_initramfs_root "$work/root" "$busybox_deb" "${modules[@]}"
    cp "$repo/guest/debian/init" "$work/root/init"
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    # Uncompressed: the guest kernel would otherwise spend time unpacking it.
    (cd "$work/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$dir.tmp/initramfs.cpio"
    cp "$DEBIAN_KERNEL_VMLINUZ" "$dir.tmp/vmlinuz"
    echo "$DEBIAN_KERNEL_RELEASE" >"$dir.tmp/release"
    touch "$dir.tmp/.complete"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
fi
echo "VIREO_DEBIAN_KERNEL=$dir/vmlinuz"
echo "VIREO_DEBIAN_INITRAMFS=$dir/initramfs.cpio"
echo "VIREO_DEBIAN_RELEASE=$(cat "$dir/release")"
