#!/usr/bin/env bash
# End to end with Debian's stock kernel: linux-image-amd64 exactly as Debian ships it (an xz
# bzImage with kvm-clock and paravirt on), the virtio modules from the same package in an
# initramfs (scripts/build-debian-guest.sh), 2 vCPUs, 512 MiB, and a raw virtio-blk data disk.
# Checks that user space runs: the guest's busybox init prints its kernel release and CPU count,
# loads virtio_pci and virtio_blk, reads the sentence the host put in sector 0 of the disk, writes
# its answer into sector 1 (the host reads it back after the VM ends) and powers off through ACPI.
#
# Needs guest user space: where `vireo host-check` picks the emulated-kernel-mode profile (our
# development hosts; shared/HOST-KVM.md) it says so and exits 77 (skipped) without counting anything, and
# CI runs it inside the nested test host (tests/e2e/nested.sh) instead.
# Environment: VIREO_BIN (default .build/debug/vireo), VIREO_E2E_TIMEOUT (default 600),
# VIREO_E2E_LOG_DIR, VIREO_DEBIAN_KERNEL/VIREO_DEBIAN_INITRAMFS (else built here).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
timeout_s=${VIREO_E2E_TIMEOUT:-600}
log_dir=${VIREO_E2E_LOG_DIR:-$repo/.build/e2e}
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "e2e-debian: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-debian: FAIL: $*"; }
note() { echo "e2e-debian: $*"; }
finish() { echo "e2e-debian: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

[ -x "$vireo" ] || { fail "no vireo at $vireo (swift build first)"; finish; }
profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
if [ "$profile" = emulated-kernel-mode ]; then
    note "skipped here: this host emulates guest kernel mode, where Debian's kernel needs many minutes and its user space cannot make system calls; tests/e2e/nested.sh runs this test in the nested test host"
    exit 77
fi
if [ -z "${VIREO_DEBIAN_KERNEL:-}" ] || [ -z "${VIREO_DEBIAN_INITRAMFS:-}" ]; then
    vars=$("$repo/scripts/build-debian-guest.sh") || { fail "scripts/build-debian-guest.sh failed"; finish; }
    eval "$(printf '%s\n' "$vars" | grep -E '^VIREO_DEBIAN_[A-Z]+=' | sed 's/=\(.*\)/="\1"/')"
fi
kernel=$VIREO_DEBIAN_KERNEL initrd=$VIREO_DEBIAN_INITRAMFS
release=${VIREO_DEBIAN_RELEASE:-$(basename "$(dirname "$kernel")")}
[ -r "$kernel" ] && [ -r "$initrd" ] || { fail "no Debian kernel/initramfs at $kernel, $initrd"; finish; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
disk=$work/data.img
from_host="written by the host for Debian's kernel $(date -u +%s)"
truncate -s 4M "$disk"
printf '%s\n' "$from_host" | dd of="$disk" conv=notrunc 2>/dev/null

mkdir -p "$log_dir"
log=$log_dir/linux-debian-$(date -u +%Y%m%dT%H%M%SZ).log
cmdline="console=ttyS0 panic=-1 random.trust_bootloader=on"
note "booting Debian's $release ($kernel) with $initrd: 2 vCPUs, 512M, a 4 MiB raw disk; profile $profile"
note "log: $log"
started=$(date +%s.%N)
timeout --kill-after=10 "$timeout_s" "$vireo" run --verbose --kernel "$kernel" --initrd "$initrd" \
    --cpus 2 --memory 512M --cmdline "$cmdline" --disk "path=$disk,serial=vireo-debian" </dev/null >"$log" 2>&1
rc=$?
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
note "vireo run exited with status $rc after ${elapsed}s"

clean=$(tr -d '\r' <"$log")
has() { grep -qE -- "$1" <<<"$clean"; }
first() { grep -m1 -E -- "$1" <<<"$clean" | sed 's/^\[[^]]*\] //'; }
check() { if has "$1"; then pass "$2: $(first "$1")"; else fail "$2: no line matching '$1'${3:+ (got: '$(first "$3")')}"; fi; }

check '^vireo: bzImage payload xz .* decompressed on host' "Debian's xz bzImage unpacked on the host" '^vireo: .*(payload|bzImage)'
check "Linux version ${release//./\\.} " "Debian's kernel booted"
check 'smp: Brought up 1 node, 2 CPUs' "both vCPUs up" 'smp: Brought up'
check '^VIREO-DEBIAN: user space up: kernel '"${release//./\\.}"', 2 CPUs' "user space runs (busybox init, system calls work)" '^VIREO-DEBIAN'
check 'virtio_blk virtio[0-9]+: \[vda\] 8192 512-byte logical blocks' "virtio-blk probed by Debian's module" 'virtio_blk|VIREO-DEBIAN: error'
if has "^VIREO-DEBIAN: vda sector 0 reads: ${from_host}\$"; then pass "guest process read the host's sentence from vda"
else fail "vda read: wanted '$from_host', got '$(first '^VIREO-DEBIAN: vda sector 0' || echo none)'"; fi
check '^VIREO-DEBIAN: vda: wrote sector 1 and flushed' "guest process wrote and flushed vda"
answer=$(dd if="$disk" bs=512 skip=1 count=1 2>/dev/null | tr -d '\000' | head -1)
if [ "$answer" = "answer from user space on Debian kernel $release" ]; then pass "host read the guest's answer back from the disk image"
else fail "sector 1 of the disk holds '${answer:-nothing}'"; fi
if [ $rc -eq 0 ] && has '^vireo: guest powered off'; then pass "poweroff -f ended vireo run through ACPI S5 with status 0"
else fail "wanted an ACPI power-off and status 0, got status $rc: $(first '^vireo: (guest|error|stopped)' || echo 'no outcome line')"; fi
user_at=$(first '^VIREO-DEBIAN: user space up' | sed -n 's/.*uptime \([0-9.]*\) s/\1/p')
note "user space reached at ${user_at:-?} s of guest uptime; ${elapsed}s wall for the whole run"
[ "$failed" -eq 0 ] || { note "last 30 lines of $log:"; tail -30 <<<"$clean" | sed 's/^/    | /'; }
finish
