#!/usr/bin/env bash
# Builds a Debian 12 cloud-style disk image for `vireo install --import` tests: a minimal bookworm
# system (mmdebstrap) with systemd, cloud-init (datasources NoCloud, None), openssh-server,
# cloud-guest-utils (growpart) and Debian's stock kernel, booting through a BIOS (SeaBIOS) from a
# virtio disk:
#   sector 0      SYSLINUX's MBR code
#   partition 1   FAT32 "VIREO-BOOT", bootable: SYSLINUX, the kernel and initramfs (copied from
#                 the root's /boot), syslinux.cfg: APPEND root=LABEL=vireo-cloud ro console=ttyS0
#   partition 2   ext4 "vireo-cloud": the root file system (last, so growpart can grow it)
# The disk is made without mounting anything or loop devices (sfdisk, mkfs.fat --offset, mcopy,
# `syslinux --offset`, mkfs.ext4 -d into a file then dd), then converted to qcow2. The root tree
# itself needs root (mmdebstrap --mode=root; sudo when not root).
#
#   scripts/build-cloud-image.sh
#
# Cached in ${VIREO_CLOUD_IMAGE_DIR:-~/.cache/vireo/cloud-image}, keyed by this recipe and the
# versions the host's apt lists give for the named packages and the kernel; the image's full package
# list is kept beside it (packages.txt). Mirror: the host's Debian archive from its apt sources
# (VIREO_DEBIAN_MIRROR / VIREO_DEBIAN_SECURITY_MIRROR override). Progress on stderr; prints:
#   VIREO_CLOUD_IMAGE=<debian-cloud.qcow2>  VIREO_CLOUD_IMAGE_RELEASE=<uname -r>
set -euo pipefail
readonly RECIPE=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_CLOUD_IMAGE_DIR:-$HOME/.cache/vireo/cloud-image}
DK_LOG_PREFIX=build-cloud-image
# shellcheck source=lib/debian-kernel.sh
source "$repo/scripts/lib/debian-kernel.sh"
log() { echo "build-cloud-image: $*" >&2; }
die() { echo "build-cloud-image: error: $*" >&2; exit 1; }

suite=bookworm
packages=(systemd-sysv udev dbus cloud-init cloud-guest-utils openssh-server sudo linux-image-amd64
          initramfs-tools ifupdown isc-dhcp-client iproute2 netbase e2fsprogs)
root_label=vireo-cloud boot_label=VIREO-BOOT
cmdline="root=LABEL=$root_label ro console=ttyS0"
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin

# --- tools --------------------------------------------------------------------------------------
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# sfdisk and mkfs.* live in /usr/sbin, which a normal user's PATH lacks on Debian.
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=lib/need-tools.sh
source "$repo/scripts/lib/need-tools.sh"
need_tools mmdebstrap:mmdebstrap sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools syslinux:syslinux "$mbr_bin":syslinux-common mkfs.ext4:e2fsprogs qemu-img:qemu-utils

# --- the mirror: the host's own Debian archive and security archive -----------------------------
# From one-line (sources.list) and deb822 (*.sources) entries: the first URI serving $suite, and
# the first serving $suite-security.
host_mirror() {  # suite
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v want="$1" '
            /^[[:space:]]*#/ { next }
            $1 == "deb" { i = 2; if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++; if ($2 ~ /^\[/) i++
                          if ($(i + 1) == want) { print $i; exit } next }
            /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/); uri = ""; next }
            /^URIs:/ { uri = $2; next }
            /^Suites:/ { if (deb && uri != "") for (i = 2; i <= NF; i++) if ($i == want) { print uri; exit } }
            /^[[:space:]]*$/ { deb = 0; uri = "" }' "$f"
    done | head -1
}
mirror=${VIREO_DEBIAN_MIRROR:-$(host_mirror $suite)}
security=${VIREO_DEBIAN_SECURITY_MIRROR:-$(host_mirror $suite-security)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main")

# --- the cache key: recipe + the versions apt would install --------------------------------------
kernel_package=$(debian_kernel_package) || exit 1
# One apt-cache call (each takes most of a second): "name:" lines, then each one's "Candidate:".
versions=$(apt-cache policy "${packages[@]}" "$kernel_package" systemd python3 libc6 2>/dev/null |
           awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) } /^ *Candidate:/ { print name, $2 }' | sort -u)
for p in "${packages[@]}"; do
    grep -q "^$p [^(]" <<<"$versions" || die "apt has no candidate version of $p (apt-get update?)"
done

# The customize hook: mmdebstrap runs it (as a script, with the root's path) once every package is
# in. Configuration first, then a fresh initramfs (initramfs-tools' MODULES=most brings virtio_pci,
# virtio_blk, ext4 and the other disk drivers; checked below).
customize_root() {  # root
    local r=$1
    cat >"$r/etc/cloud/cloud.cfg.d/99-vireo-datasources.cfg" <<'CFG'
# Written by scripts/build-cloud-image.sh: the seed comes from a NoCloud "cidata" disk.
datasource_list: [ NoCloud, None ]
# The image has no locales package: C.UTF-8 (libc's own) needs no locale-gen.
locale: C.UTF-8
CFG
    echo LANG=C.UTF-8 >"$r/etc/default/locale"
    # No floppy drive in a cloud VM; QEMU's pc machine has a controller that cloud-init's probes wait on.
    echo 'blacklist floppy' >"$r/etc/modprobe.d/vireo-no-floppy.conf"
    echo "LABEL=$ROOT_LABEL / ext4 errors=remount-ro 0 1" >"$r/etc/fstab"
    cat >"$r/etc/network/interfaces" <<'CFG'
# Written by scripts/build-cloud-image.sh; cloud-init adds the NICs (interfaces.d/50-cloud-init).
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
CFG
    mkdir -p "$r/etc/network/interfaces.d"
    echo localhost >"$r/etc/hostname"
    echo RESUME=none >"$r/etc/initramfs-tools/conf.d/resume"
    # A login on the serial console (systemd's getty generator adds it too for console=ttyS0).
    mkdir -p "$r/etc/systemd/system/getty.target.wants"
    ln -sf /lib/systemd/system/serial-getty@.service "$r/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    # Each clone makes its own identity on first boot: machine-id (systemd), SSH host keys (cloud-init).
    : >"$r/etc/machine-id"; rm -f "$r/var/lib/dbus/machine-id"
    rm -f "$r"/etc/ssh/ssh_host_*_key "$r"/etc/ssh/ssh_host_*_key.pub
    chroot "$r" update-initramfs -u -k all
    chroot "$r" dpkg-query -W -f='${Package} ${Version}\n' >"$r/../packages.txt"
}
# No SERIAL directive (as scripts/build-boot-disk.sh): SeaBIOS's serial console already mirrors
# int 10h text to COM1, so writing COM1 as well doubles every letter.
syslinux_cfg="PROMPT 0
TIMEOUT 10
DEFAULT linux
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $cmdline"

mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9
key=$( { echo "recipe $RECIPE"; echo "$suite ${packages[*]}"; echo "$versions"; echo "$syslinux_cfg"
         declare -f customize_root; sha256sum <"$mbr_bin"
         dpkg-query -W -f='${Package} ${Version}\n' syslinux syslinux-common mtools dosfstools e2fsprogs 2>/dev/null
       } | sha256sum | cut -c1-16)
dir=$cache/debian-$suite-$key
if [ -e "$dir/.complete" ]; then
    echo "VIREO_CLOUD_IMAGE=$dir/debian-cloud.qcow2"
    echo "VIREO_CLOUD_IMAGE_RELEASE=$(cat "$dir/release")"
    exit 0
fi

started=$(date +%s)
log "building a $suite cloud image ($kernel_package, cloud-init $(sed -n 's/^cloud-init //p' <<<"$versions")) from $mirror"
work=$(mktemp -d "${TMPDIR:-/tmp}/vireo-cloud-image.XXXXXX")
trap '$SUDO rm -rf "$work"' EXIT
root=$work/root

# --- 1. the root tree --------------------------------------------------------------------------
hook=$work/customize.sh
{ echo '#!/bin/bash'; echo 'set -euo pipefail'; echo "ROOT_LABEL=$root_label"; declare -f customize_root
  echo 'customize_root "$1"'; } >"$hook"
chmod 0755 "$hook"
mmdebstrap_log=$work/mmdebstrap.log
log "mmdebstrap --variant=minbase $suite (${#packages[@]} packages and their dependencies; log: $mmdebstrap_log)"
$SUDO mmdebstrap --mode=root --variant=minbase --format=directory \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --aptopt='Apt::Install-Recommends "false"' \
    --customize-hook="$hook" \
    "$suite" "$root" "${sources[@]}" >"$mmdebstrap_log" 2>&1 ||
    { tail -20 "$mmdebstrap_log" >&2; die "mmdebstrap failed (see above)"; }
log "root tree ready after $(( $(date +%s) - started ))s: $($SUDO du -sh "$root" | cut -f1)"

vmlinuz=$(ls "$root"/boot/vmlinuz-* | head -1) initrd=$(ls "$root"/boot/initrd.img-* | head -1)
[ -r "$vmlinuz" ] && [ -r "$initrd" ] || die "no kernel or initramfs in the root's /boot"
release=${vmlinuz##*/vmlinuz-}
# The initramfs must find the root disk by itself: check it has the drivers (or the kernel does).
initrd_list=$($SUDO chroot "$root" lsinitramfs "/boot/initrd.img-$release") || die "lsinitramfs failed"
for m in virtio_pci virtio_blk ext4; do
    grep -qE "/$m\.ko(\.[a-z]+)?$" <<<"$initrd_list" ||
        grep -qE "/$m\.ko$" "$root/lib/modules/$release/modules.builtin" || die "the initramfs has no $m module"
done

# --- 2. the disk: MBR, FAT32 /boot partition with SYSLINUX, ext4 root ------------------------------
mib=1048576
boot_mib=$(( ($(stat -c %s "$vmlinuz") + $(stat -c %s "$initrd")) / mib + 32 ))
boot_mib=$(( boot_mib > 128 ? boot_mib : 128 ))
# Root: what the tree holds plus a third (ext4's metadata, the first boot's logs), 256 MiB at least spare.
used_mib=$(( $($SUDO du -sm "$root" | cut -f1) ))
root_mib=$(( used_mib + (used_mib / 3 > 256 ? used_mib / 3 : 256) ))
boot_start=2048 boot_sectors=$(( boot_mib * 2048 ))
root_start=$(( boot_start + boot_sectors )) root_sectors=$(( root_mib * 2048 ))
disk_mib=$(( 1 + boot_mib + root_mib ))
img=$work/disk.img
log "disk: ${disk_mib} MiB (boot ${boot_mib} MiB FAT32, root ${root_mib} MiB ext4 holding ${used_mib} MiB)"
truncate -s "${disk_mib}M" "$img"
printf 'label: dos\nlabel-id: 0x5649524f\nstart=%d, size=%d, type=c, bootable\nstart=%d, size=%d, type=83\n' \
    "$boot_start" "$boot_sectors" "$root_start" "$root_sectors" |
    sfdisk --quiet --no-reread --no-tell-kernel "$img" >&2 || die "sfdisk failed"
dd if="$mbr_bin" of="$img" bs=440 count=1 conv=notrunc status=none || die "writing $mbr_bin failed"

# -s 1: 512-byte clusters, so that the partition has the 65525 clusters or more a FAT32 must have
# (with fewer, mtools and SYSLINUX take it for FAT16).
mkfs_out=$(mkfs.fat -F 32 -s 1 -n "$boot_label" -i 5649524f -h "$boot_start" --offset="$boot_start" "$img" \
    $((boot_sectors / 2)) 2>&1) || die "mkfs.fat failed: $mkfs_out"
printf '%s\n' "$syslinux_cfg" >"$work/syslinux.cfg"
fs="$img@@$((boot_start * 512))"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$fs" "$vmlinuz" ::vmlinuz && mcopy -i "$fs" "$initrd" ::initrd.img &&
    mcopy -i "$fs" "$work/syslinux.cfg" ::syslinux.cfg || die "mcopy into the FAT partition failed"
syslinux --install --offset $((boot_start * 512)) "$img" || die "syslinux --install failed"

# mkfs.ext4 -d copies the tree (owners, modes, device nodes, xattrs) into a file system image.
$SUDO mkfs.ext4 -q -F -L "$root_label" -d "$root" "$work/root.ext4" "${root_mib}M" >&2 || die "mkfs.ext4 -d failed"
dd if="$work/root.ext4" of="$img" bs=1M seek=$(( root_start / 2048 )) conv=notrunc,sparse status=none ||
    die "copying the root file system into the disk failed"
rm -f "$work/root.ext4"

# --- 3. qcow2, and the cache -------------------------------------------------------------------
rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
qemu-img convert -f raw -O qcow2 "$img" "$dir.tmp/debian-cloud.qcow2" || die "qemu-img convert failed"
cp "$work/packages.txt" "$dir.tmp/packages.txt"
echo "$release" >"$dir.tmp/release"
echo "$cmdline" >"$dir.tmp/cmdline"
touch "$dir.tmp/.complete"
rm -rf "$dir"; mv "$dir.tmp" "$dir"
# Earlier images are superseded (a VM still using one keeps its open files).
find "$cache" -maxdepth 1 -name "debian-$suite-*" ! -name "debian-$suite-$key" -exec rm -rf {} +
log "built $dir/debian-cloud.qcow2 ($(du -h "$dir/debian-cloud.qcow2" | cut -f1), virtual ${disk_mib} MiB) in $(( $(date +%s) - started ))s"
echo "VIREO_CLOUD_IMAGE=$dir/debian-cloud.qcow2"
echo "VIREO_CLOUD_IMAGE_RELEASE=$release"
