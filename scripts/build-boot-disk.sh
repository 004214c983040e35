#!/usr/bin/env bash
# Builds a BIOS-bootable raw disk image for firmware-boot tests (vireo run --firmware bios):
# an MBR disk with SYSLINUX's MBR code in sector 0 and one bootable FAT32 partition at 1 MiB that
# holds SYSLINUX, Debian's stock kernel and the busybox initramfs of scripts/build-debian-guest.sh.
# SYSLINUX speaks through the BIOS (SeaBIOS mirrors it to COM1) and boots the kernel with
# console=ttyS0.
# Rootless: sfdisk on the image file, mkfs.fat --offset, mcopy and `syslinux --offset` (mtools);
# no mount, no loop device. Installs fdisk, dosfstools, mtools, syslinux(-common) if missing.
#
#   scripts/build-boot-disk.sh [--cmdline "EXTRA"]
#
# Cached in ${VIREO_BOOT_DISK_DIR:-~/.cache/vireo/boot-disk}, keyed by the inputs' hashes; prints:
#   VIREO_BOOT_DISK_BIOS=<image>  VIREO_BOOT_DISK_RELEASE=<uname -r>  VIREO_BOOT_DISK_CMDLINE=<APPEND>
set -euo pipefail
readonly RECIPE=2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_BOOT_DISK_DIR:-$HOME/.cache/vireo/boot-disk}
log() { echo "build-boot-disk: $*" >&2; }
die() { echo "build-boot-disk: error: $*" >&2; exit 1; }

extra=""
while (($#)); do
    case "$1" in
        --cmdline) [ $# -ge 2 ] || die "--cmdline needs a value"; extra=$2; shift 2 ;;
        *) echo "usage: $0 [--cmdline \"EXTRA\"]" >&2; exit 2 ;;
    esac
done
cmdline="console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on panic=-1"
# No host-profile flags: where KVM emulates guest kernel mode the stock kernel's in-guest xz
# decompression alone takes hours, so tests stop at its setup code there; elsewhere none are needed.
cmdline+="${extra:+ $extra}"
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin

# sfdisk and mkfs.fat live in /usr/sbin, which a normal user's PATH lacks on Debian.
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=lib/need-tools.sh
source "$repo/scripts/lib/need-tools.sh"
need_tools sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools syslinux:syslinux "$mbr_bin":syslinux-common

vars=$("$repo/scripts/build-debian-guest.sh") || die "scripts/build-debian-guest.sh failed"
kernel=$(sed -n 's/^VIREO_DEBIAN_KERNEL=//p' <<<"$vars")
initrd=$(sed -n 's/^VIREO_DEBIAN_INITRAMFS=//p' <<<"$vars")
release=$(sed -n 's/^VIREO_DEBIAN_RELEASE=//p' <<<"$vars")
[ -r "$kernel" ] && [ -r "$initrd" ] || die "build-debian-guest.sh named no readable kernel/initramfs"

# No SERIAL directive and no earlyprintk: SeaBIOS's serial console (sercon, which Vireo and QEMU
# without graphics turn on) already sends int 10h text (SYSLINUX's, the kernel setup code's) to
# COM1 and reads keys from it; writing COM1 directly as well doubled every letter.
cfg="PROMPT 0
TIMEOUT 10
DEFAULT linux
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $cmdline"

mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9
key=$( { echo "recipe $RECIPE"; echo "$cfg"; sha256sum <"$kernel"; sha256sum <"$initrd"; sha256sum <"$mbr_bin"
         dpkg-query -W -f='${Package} ${Version}\n' syslinux syslinux-common mtools dosfstools fdisk 2>/dev/null
       } | sha256sum | cut -c1-16)
dir=$cache/bios-$key
if [ ! -e "$dir/.complete" ]; then
    log "building bios-syslinux.img: $release, SYSLINUX $(dpkg-query -W -f='${Version}' syslinux 2>/dev/null)"
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    img=$dir.tmp/bios-syslinux.img
    # Partition 1 from sector 2048 (1 MiB) to the end; room for the payload plus 16 MiB, 64 MiB at least.
    payload_mib=$(( ($(stat -c %s "$kernel") + $(stat -c %s "$initrd")) / 1048576 + 16 ))
    size_mib=$(( payload_mib > 64 ? payload_mib : 64 ))
    start=2048 sectors=$(( (size_mib - 1) * 2048 ))
    truncate -s "${size_mib}M" "$img"
    printf 'label: dos\nlabel-id: 0x5649524f\nstart=%d, size=%d, type=c, bootable\n' "$start" "$sectors" |
        sfdisk --quiet --no-reread --no-tell-kernel "$img" >&2 || die "sfdisk failed"
    dd if="$mbr_bin" of="$img" bs=440 count=1 conv=notrunc status=none || die "writing $mbr_bin failed"
    mkfs.fat -F 32 -n VIREO -i 5649524f -h "$start" --offset="$start" "$img" $((sectors / 2)) >/dev/null ||
        die "mkfs.fat failed"
    printf '%s\n' "$cfg" >"$dir.tmp/syslinux.cfg"
    fs="$img@@$((start * 512))"
    export MTOOLS_SKIP_CHECK=1
    mcopy -i "$fs" "$kernel" ::vmlinuz && mcopy -i "$fs" "$initrd" ::initrd.img &&
        mcopy -i "$fs" "$dir.tmp/syslinux.cfg" ::syslinux.cfg || die "mcopy into the FAT partition failed"
    syslinux --install --offset $((start * 512)) "$img" || die "syslinux --install failed"
    echo "$release" >"$dir.tmp/release"
    echo "$cmdline" >"$dir.tmp/cmdline"
    touch "$dir.tmp/.complete"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
fi
echo "VIREO_BOOT_DISK_BIOS=$dir/bios-syslinux.img"
echo "VIREO_BOOT_DISK_RELEASE=$(cat "$dir/release")"
echo "VIREO_BOOT_DISK_CMDLINE=$(cat "$dir/cmdline")"
