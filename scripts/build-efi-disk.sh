#!/usr/bin/env bash
# Builds a UEFI-bootable raw disk image for firmware-boot tests (vireo run --firmware uefi): a GPT
# disk with one EFI System Partition (FAT32, from 1 MiB) that holds \EFI\BOOT\BOOTX64.EFI (GRUB,
# made with grub-mkstandalone with its grub.cfg inside), Debian's stock kernel and the busybox
# initramfs of scripts/build-debian-guest.sh. OVMF finds the removable-media path itself (no boot
# variables needed); GRUB writes to the EFI console, which OVMF mirrors to COM1, and boots the
# kernel from the ESP it was loaded from, with console=ttyS0.
# Rootless: sfdisk on the image file, mkfs.fat --offset and mcopy (mtools); no mount, no loop
# device. Installs fdisk, dosfstools, mtools, grub-common and grub-efi-amd64-bin if missing.
#
#   scripts/build-efi-disk.sh [--cmdline "EXTRA"]
#
# Cached in ${VIREO_BOOT_DISK_DIR:-~/.cache/vireo/boot-disk}, keyed by the inputs' hashes; prints:
#   VIREO_EFI_DISK=<image>  VIREO_EFI_DISK_RELEASE=<uname -r>  VIREO_EFI_DISK_CMDLINE=<kernel command line>
set -euo pipefail
readonly RECIPE=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${VIREO_BOOT_DISK_DIR:-$HOME/.cache/vireo/boot-disk}
log() { echo "build-efi-disk: $*" >&2; }
die() { echo "build-efi-disk: error: $*" >&2; exit 1; }

extra=""
while (($#)); do
    case "$1" in
        --cmdline) [ $# -ge 2 ] || die "--cmdline needs a value"; extra=$2; shift 2 ;;
        *) echo "usage: $0 [--cmdline \"EXTRA\"]" >&2; exit 2 ;;
    esac
done
# The same command line as scripts/build-boot-disk.sh's.
cmdline="console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on panic=-1"
cmdline+="${extra:+ $extra}"
grub_dir=/usr/lib/grub/x86_64-efi
# The FAT volume id ("VIEF"): fixed, like the GUIDs.
volid=56494546
# Fixed GUIDs, so the same inputs give the same image (and OVMF's boot option for it stays valid).
disk_guid=5649524f-4546-4944-4953-4b0000000001 esp_guid=5649524f-4546-4944-4953-4b0000000002

# sfdisk and mkfs.fat live in /usr/sbin, which a normal user's PATH lacks on Debian.
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=lib/need-tools.sh
source "$repo/scripts/lib/need-tools.sh"
need_tools sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools grub-mkstandalone:grub-common \
    "$grub_dir/linux.mod":grub-efi-amd64-bin

vars=$("$repo/scripts/build-debian-guest.sh") || die "scripts/build-debian-guest.sh failed"
kernel=$(sed -n 's/^VIREO_DEBIAN_KERNEL=//p' <<<"$vars")
initrd=$(sed -n 's/^VIREO_DEBIAN_INITRAMFS=//p' <<<"$vars")
release=$(sed -n 's/^VIREO_DEBIAN_RELEASE=//p' <<<"$vars")
[ -r "$kernel" ] && [ -r "$initrd" ] || die "build-debian-guest.sh named no readable kernel/initramfs"

# Commands, no menu: nothing to wait for (timeout 0 is moot) and no menu screen drawn on the
# console. GRUB's own terminal is the EFI console (its default on EFI): OVMF mirrors that to COM1
# (with terminal escape sequences), so no `serial`/`terminal_output serial` here: writing COM1
# directly as well would print every line twice. $root starts as GRUB's memdisk (the image's own
# files); the ESP is the device in $cmdpath, where the firmware loaded GRUB from ("(hd0,gpt1)/EFI/BOOT").
# GRUB names that device when it starts, before any config runs: part_gpt and fat must be in its
# core image (--modules) for it to say "(hd0,gpt1)", not "(hd0)".
# (No `search`: it probes every disk and partition, and one without a file system makes GRUB try
# each file system module that fs.lst names, each missing one an error line on the console.)
# Should a command fail, GRUB says so and the last echo names the failure before normal mode
# drops to its command line. On a machine without a display (no GOP) `boot` prints "error: no
# suitable video mode found." and "Booting in blind mode": harmless, the kernel has console=ttyS0.
cfg="set timeout=0
regexp --set=1:root '^\\((.+)\\)' \"\$cmdpath\"
echo \"vireo-efi-grub: loading linux from (\$root)/vmlinuz\"
linux /vmlinuz $cmdline
initrd /initrd.img
boot
echo \"vireo-efi-grub: error: booting /vmlinuz from (\$root) failed (cmdpath \$cmdpath)\""
# What the memdisk holds: these modules and their dependencies (normal mode, the kernel loader,
# GPT, FAT, regexp, echo); no locales, fonts or themes. core: those loaded before the config.
modules="normal linux part_gpt fat regexp echo" core="part_gpt fat"

mkdir -p "$cache"
exec 9>"$cache/.lock"; flock 9
key=$( { echo "recipe $RECIPE"; echo "$cfg"; echo "$modules / $core"; sha256sum <"$kernel"; sha256sum <"$initrd"
         dpkg-query -W -f='${Package} ${Version}\n' grub-efi-amd64-bin grub-common mtools dosfstools fdisk 2>/dev/null
       } | sha256sum | cut -c1-16)
dir=$cache/efi-$key
if [ ! -e "$dir/.complete" ]; then
    log "building efi-grub.img: $release, GRUB $(dpkg-query -W -f='${Version}' grub-efi-amd64-bin 2>/dev/null)"
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    img=$dir.tmp/efi-grub.img
    printf '%s\n' "$cfg" >"$dir.tmp/grub.cfg"
    grub-mkstandalone -O x86_64-efi -d "$grub_dir" -o "$dir.tmp/BOOTX64.EFI" --install-modules="$modules" --modules="$core" \
        --locales= --fonts= --themes= "boot/grub/grub.cfg=$dir.tmp/grub.cfg" >&2 || die "grub-mkstandalone failed"
    # The ESP from sector 2048 (1 MiB), ending 1 MiB before the disk's end (the backup GPT's room);
    # room for the payload plus 16 MiB, 64 MiB at least (FAT32 wants 32 MiB or more).
    payload_mib=$(( ($(stat -c %s "$kernel") + $(stat -c %s "$initrd") + $(stat -c %s "$dir.tmp/BOOTX64.EFI")) / 1048576 + 16 ))
    size_mib=$(( payload_mib > 64 ? payload_mib : 64 ))
    start=2048 sectors=$(( (size_mib - 2) * 2048 ))
    # The file goes to the ESP's end for mkfs.fat (which warns about space behind the file system it
    # makes), then to its full size for sfdisk (which writes only the GPT, at both ends, and notes
    # the vfat signature it leaves in partition 1).
    truncate -s "$(( (start + sectors) * 512 ))" "$img"
    mkfs.fat -F 32 -n VIREO-EFI -i "$volid" -h "$start" --offset="$start" "$img" $((sectors / 2)) >/dev/null ||
        die "mkfs.fat failed"
    truncate -s "${size_mib}M" "$img"
    printf 'label: gpt\nlabel-id: %s\nstart=%d, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=%s, name="EFI System"\n' \
        "$disk_guid" "$start" "$sectors" "$esp_guid" |
        sfdisk --quiet --wipe-partitions never --no-reread --no-tell-kernel "$img" >&2 || die "sfdisk failed"
    fs="$img@@$((start * 512))"
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$fs" ::EFI ::EFI/BOOT && mcopy -i "$fs" "$dir.tmp/BOOTX64.EFI" ::EFI/BOOT/BOOTX64.EFI &&
        mcopy -i "$fs" "$kernel" ::vmlinuz && mcopy -i "$fs" "$initrd" ::initrd.img ||
        die "mcopy into the ESP failed"
    echo "$release" >"$dir.tmp/release"
    echo "$cmdline" >"$dir.tmp/cmdline"
    touch "$dir.tmp/.complete"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
fi
echo "VIREO_EFI_DISK=$dir/efi-grub.img"
echo "VIREO_EFI_DISK_RELEASE=$(cat "$dir/release")"
echo "VIREO_EFI_DISK_CMDLINE=$(cat "$dir/cmdline")"
