#!/usr/bin/env bash
# End to end for firmware boot: `vireo run --firmware bios` boots a real BIOS boot chain from a raw
# disk (scripts/build-boot-disk.sh: SYSLINUX's MBR, a bootable FAT32 partition with SYSLINUX,
# Debian's stock kernel and a busybox initramfs). Checks the serial console shows, in this order:
# SeaBIOS's version banner, "Booting from Hard Disk", SYSLINUX's banner, SYSLINUX loading the
# kernel and initramfs, the kernel's real-mode setup code ("Probing EDD"), the kernel's
# "Linux version <release>", its user space (which reads and writes the boot disk) and power-off. Then a disk of zeros: SeaBIOS must say "No bootable device" (or
# "Boot failed") while the VM stays up. Lines may come doubled letter by letter ("LLooaaddiinngg")
# where SeaBIOS mirrors int 10h text to the serial port besides the boot loader writing there. Each VM is killed once its lines are seen (or on timeout).
#
# Where `vireo host-check` says the host's KVM emulates guest kernel mode (shared/HOST-KVM.md),
# "Linux version" is not awaited unless VIREO_E2E_FIRMWARE_BANNER=1: the stock kernel's in-guest
# xz decompression runs in the instruction emulator there at ~0.2-0.5 MiB a minute (63 MiB: hours,
# measured under QEMU). The setup code's line is then the last check, and the output says so.
#
# Environment: VIREO_BIN (default .build/debug/vireo), VIREO_E2E_TIMEOUT (seconds for the whole
# boot chain, default 300), VIREO_E2E_LOG_DIR, VIREO_BOOT_DISK_BIOS (+ VIREO_BOOT_DISK_RELEASE;
# else built here), VIREO_E2E_FIRMWARE_PEER=vireo (default) | qemu: run the same checks against
# qemu-system-x86_64 -M pc with Debian's SeaBIOS (VIREO_E2E_QEMU_ACCEL=kvm (default) | tcg).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
timeout_s=${VIREO_E2E_TIMEOUT:-300}
log_dir=${VIREO_E2E_LOG_DIR:-$repo/.build/e2e}
peer=${VIREO_E2E_FIRMWARE_PEER:-vireo}
accel=${VIREO_E2E_QEMU_ACCEL:-kvm}
seabios=/usr/share/seabios/bios-256k.bin
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "e2e-firmware: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-firmware: FAIL: $*"; }
note() { echo "e2e-firmware: $*"; }
finish() { echo "e2e-firmware: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

work=$(mktemp -d)
vm_pid=
cleanup() { [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

case "$peer" in
    vireo) [ -x "$vireo" ] || { fail "no vireo at $vireo (swift build first)"; finish; } ;;
    qemu) command -v qemu-system-x86_64 >/dev/null && [ -r "$seabios" ] ||
              { fail "VIREO_E2E_FIRMWARE_PEER=qemu needs qemu-system-x86_64 and $seabios (seabios)"; finish; }
          case "$accel" in kvm) cpu=host,-arch-capabilities ;; tcg) cpu=max ;;
              *) fail "VIREO_E2E_QEMU_ACCEL must be kvm or tcg"; finish ;; esac ;;
    *) fail "VIREO_E2E_FIRMWARE_PEER must be vireo or qemu"; finish ;;
esac
if [ -z "${VIREO_BOOT_DISK_BIOS:-}" ]; then
    vars=$("$repo/scripts/build-boot-disk.sh") || { fail "scripts/build-boot-disk.sh failed"; finish; }
    eval "$(printf '%s\n' "$vars" | grep -E '^VIREO_BOOT_DISK_(BIOS|RELEASE)=' | sed 's/=\(.*\)/="\1"/')"
fi
[ -r "$VIREO_BOOT_DISK_BIOS" ] || { fail "no boot disk at $VIREO_BOOT_DISK_BIOS"; finish; }
release=${VIREO_BOOT_DISK_RELEASE:-}
banner=${VIREO_E2E_FIRMWARE_BANNER:-auto}
if [ "$banner" = auto ]; then
    banner=1
    if [ "$peer/$accel" != qemu/tcg ] && [ -x "$vireo" ] &&
       "$vireo" host-check 2>/dev/null | grep -q 'profile.*emulated-kernel-mode'; then
        banner=0
        note "this host's KVM emulates guest kernel mode: the kernel's in-guest xz decompression takes hours here,"
        note "so the last check is the kernel's setup code, not 'Linux version' (VIREO_E2E_FIRMWARE_BANNER=1 to wait for it)"
    fi
fi

mkdir -p "$log_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# start_vm DISK NAME: boots DISK in the background; the serial console goes to $serial, the rest to $log.
start_vm() {
    serial=$log_dir/firmware-boot-$stamp-$2.serial log=$log_dir/firmware-boot-$stamp-$2.log
    : >"$serial"
    if [ "$peer" = qemu ]; then
        # graphics=off: QEMU tells SeaBIOS "no graphics" (fw_cfg), so SeaBIOS mirrors its own and
        # int 10h text output (the boot loader's before it switches to serial) to COM1 ("sercon").
        qemu-system-x86_64 -M pc,graphics=off -accel "$accel" -cpu "$cpu" -m 512 -smp 1 -bios "$seabios" \
            -drive "file=$1,format=raw,if=virtio" -nic none -display none -serial "file:$serial" -no-reboot \
            </dev/null >"$log" 2>&1 &
    else
        "$vireo" run --firmware bios --disk "path=$1,format=raw" --cpus 1 --memory 512M --serial-log "$serial" \
            </dev/null >"$log" 2>&1 &
    fi
    vm_pid=$! started=$(date +%s.%N)
}
# stop_vm, clean, since, wait_for, stuck, why, check_stages.
. "$repo/tests/e2e/lib/serial-console.sh"

# 1. The boot chain, on a copy (the guest's init writes to the disk it booted from).
disk=$work/boot.img
cp --sparse=always "$VIREO_BOOT_DISK_BIOS" "$disk"
note "booting $VIREO_BOOT_DISK_BIOS (kernel ${release:-?}) with $peer${cpu:+ ($accel)}: 1 vCPU, 512M; up to ${timeout_s}s"
start_vm "$disk" boot
note "serial: $serial"
deadline=$(( $(date +%s) + timeout_s )) from=0 reached=yes
stages=('SeaBIOS \(version [^)]*\)|SeaBIOS version banner' 'Booting from Hard Disk|SeaBIOS boots the disk'
        'SYSLINUX [0-9.]+ .*Copyright|SYSLINUX banner' 'L+o+a+d+i+n+g+ +/+i+n+i+t+r+d+|SYSLINUX loaded the kernel'
        'P+r+o+b+i+n+g+ +E+D+D+|the kernel'"'"'s real-mode setup code runs')
# Where the kernel runs at speed, on to user space: the initramfs's init loads the virtio modules,
# finds the disk it was booted from, writes to it and powers off (tests/e2e/linux-debian.sh's init).
[ "$banner" = 0 ] || stages+=("Linux version ${release//./\\.}|the kernel starts"
    'VIREO-DEBIAN: user space up|user space runs' 'VIREO-DEBIAN: vda: wrote sector 1|the kernel reads and writes the boot disk'
    'VIREO-DEBIAN: powering off|init powers off')
check_stages "" "${stages[@]}"
if [ $reached = yes ] && [ "$banner" = 1 ]; then
    for _ in $(seq 60); do kill -0 "$vm_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$vm_pid" 2>/dev/null; then fail "the VM still runs 30s after the guest powered off"
    else wait "$vm_pid"; status=$?; vm_pid=
        if [ "$status" = 0 ]; then pass "the VM ended with status 0 (ACPI power-off) after $(since)s"
        else fail "the VM ended with status $status after power-off: $(why)"; fi
    fi
fi
if [ $reached = no ]; then
    note "last lines of $serial:"; clean | tail -8 | sed 's/^/    | /'
    note "last lines of $log:"; tail -8 "$log" | sed 's/^/    | /'
fi
stop_vm

# 2. Nothing bootable: SeaBIOS must say so on the console, and the VM must not die of it.
zero=$work/zero.img
truncate -s 16M "$zero"
start_vm "$zero" zero
from=0
if wait_for 'No bootable device|Boot failed' $(( $(date +%s) + 60 )); then
    if kill -0 "$vm_pid" 2>/dev/null; then
        pass "zero disk: $(clean | grep -aoE 'No bootable device|Boot failed[^.]*' | head -1) after $(since)s, VM still running"
    else
        wait "$vm_pid"; fail "zero disk: SeaBIOS reported it, but the VM ended (status $?): $(why)"
    fi
else
    fail "zero disk: no 'No bootable device' or 'Boot failed' within 60s: $(clean | tail -3 | tr '\n' ' ') $(why)"
fi
stop_vm
finish
