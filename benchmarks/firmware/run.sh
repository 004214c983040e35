#!/usr/bin/env bash
# Firmware boot: Vireo (`vireo run --firmware bios`) vs QEMU (-M pc and -M q35, KVM, the same
# Debian SeaBIOS, serial console only) on the same disk in the same run: the BIOS boot chain of
# scripts/build-boot-disk.sh (SYSLINUX, Debian's stock kernel). From process start to:
#   firmware   SeaBIOS's "Booting from Hard Disk" (POST, PCI, virtio-blk found)
#   loader     SYSLINUX's banner (its MBR and boot sector ran, read through int 13h)
#   loaded     SYSLINUX's "Loading /initrd.img... ok" (kernel and initrd read: ~60 MB of int 13h)
#   kernel     "Linux version" (only where guest kernel mode runs at speed: where KVM emulates it,
#              the stock kernel's in-guest xz decompression takes hours, so it is left out)
# Medians of --rounds (default 3); a stage a VMM never reaches within --timeout shows "-" with the
# reason (e.g. QEMU on a host whose KVM emulator lacks protected-mode iret stops inside SYSLINUX).
#
#   benchmarks/firmware/run.sh [--rounds N] [--timeout S] [--vireo PATH]
#   scripts/nested-host.sh -- env VIREO_BOOT_DISK_BIOS=... benchmarks/firmware/run.sh   # where kernel mode runs at speed
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=3 timeout_s=180 vireo=""
die() { echo "firmware/run.sh: error: $*" >&2; exit 1; }
log() { echo "firmware/run.sh: $*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --vireo) vireo=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (scripts/setup.sh installs it)"
seabios=/usr/share/seabios/bios-256k.bin
[ -r "$seabios" ] || die "$seabios is missing: apt-get install seabios"
if [ -z "$vireo" ]; then
    vireo=$repo/.build-bench/release/vireo
    if [ ! -x "$vireo" ]; then
        log "building a release vireo in .build-bench (minutes)"
        (cd "$repo" && swift build -c release --scratch-path .build-bench --product vireo >&2)
    fi
fi
[ -x "$vireo" ] || die "no vireo at $vireo"
# VIREO_BOOT_DISK_BIOS: a disk built beforehand (the nested test host sees this machine's files read-only).
disk=${VIREO_BOOT_DISK_BIOS:-$(bash "$repo/scripts/build-boot-disk.sh" | sed -n 's/^VIREO_BOOT_DISK_BIOS=//p')}
[ -r "$disk" ] || die "scripts/build-boot-disk.sh gave no disk"
# shellcheck source=../vmm/qemu-cpu.sh
. "$repo/benchmarks/vmm/qemu-cpu.sh"
qemu_cpu_pick
log "QEMU: $QEMU_CPU_NOTE"
profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
stages=(firmware loader loaded)
[ "$profile" = emulated-kernel-mode ] || stages+=(kernel)
pattern() {
    case "$1" in
        firmware) echo 'Booting from Hard Disk' ;;
        loader) echo 'SYSLINUX [0-9.]+ ' ;;
        loaded) echo 'L+o+a+d+i+n+g+ +/+i+n+i+t+r+d+.*o+k' ;;
        kernel) echo 'Linux version' ;;
    esac
}
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# run_once VMM: prints "stage=ms" for each stage reached, "why=..." when it stopped early.
run_once() {
    local serial=$work/serial out=$work/out start now stage
    : >"$serial"
    cp --sparse=always "$disk" "$work/disk.img"
    start=$(date +%s%N)
    case "$1" in
        vireo) "$vireo" run --firmware bios --host-profile "$profile" --cpus 1 --memory 512M \
                   --disk "path=$work/disk.img,format=raw" --serial-log "$serial" </dev/null >"$out" 2>&1 & ;;
        qemu-pc|qemu-q35)
            qemu-system-x86_64 -M "${1#qemu-},graphics=off" -accel kvm -cpu "$QEMU_CPU" -m 512 -smp 1 -bios "$seabios" \
                -drive "file=$work/disk.img,format=raw,if=virtio" -nic none -display none -serial "file:$serial" \
                -no-reboot </dev/null >"$out" 2>&1 & ;;
    esac
    pid=$!
    for stage in "${stages[@]}"; do
        # (No pipe into grep -q: under pipefail its early exit would fail the pipeline.)
        # (Without the screen's cursor moves, which SeaBIOS's serial console puts between words.)
        while tr -d '\r' <"$serial" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' >"$work/clean"; ! grep -qaE "$(pattern "$stage")" "$work/clean"; do
            if ! kill -0 "$pid" 2>/dev/null || grep -qaE 'internal error|emulator failed' "$out" ||
               [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge "$timeout_s" ]; then
                echo "why=$(grep -aoE -m1 '(KVM internal error|emulator failed)[^,]*' "$out" || echo "not within ${timeout_s}s")"
                kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=
                return
            fi
            sleep 0.05
        done
        now=$(date +%s%N)
        echo "$stage=$(( (now - start) / 1000000 ))"
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
declare -A result why
vmms=(vireo qemu-pc qemu-q35)
for vmm in "${vmms[@]}"; do
    for round in $(seq "$rounds"); do
        log "$vmm, round $round"
        run_once "$vmm" >"$work/$vmm-$round"
    done
    for stage in "${stages[@]}"; do
        result[$vmm/$stage]=$(cat "$work/$vmm"-* | sed -n "s/^$stage=//p" | median)
    done
    why[$vmm]=$(cat "$work/$vmm"-* | sed -n 's/^why=//p' | sort -u | head -1)
done

echo "Firmware boot, ms from process start (median of $rounds; 1 vCPU, 512 MiB, SeaBIOS $(dpkg-query -W -f='${Version}' seabios 2>/dev/null), host profile $profile)"
printf '%-10s' stage; for vmm in "${vmms[@]}"; do printf ' %10s' "$vmm"; done; printf ' %14s %14s\n' "pc/vireo" "q35/vireo"
for stage in "${stages[@]}"; do
    printf '%-10s' "$stage"
    for vmm in "${vmms[@]}"; do printf ' %10s' "${result[$vmm/$stage]:--}"; done
    for peer in qemu-pc qemu-q35; do
        a=${result[vireo/$stage]:-} b=${result[$peer/$stage]:-}
        if [ -n "$a" ] && [ -n "$b" ]; then printf ' %14s' "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", b / a }')"
        else printf ' %14s' -; fi
    done
    echo
done
for vmm in "${vmms[@]}"; do [ -z "${why[$vmm]}" ] || echo "$vmm stopped early: ${why[$vmm]}"; done
