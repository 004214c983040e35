#!/usr/bin/env bash
# A logical (LVM) storage pool through the CLI and a real daemon, as a user drives virsh:
# pool-define-as NAME logical --source-name VG --source-dev LOOP, pool-build (vgcreate),
# pool-start (vgchange -ay), pool-list --details, vol-create-as (lvcreate), vol-list, vol-delete
# (lvremove), pool-destroy (vgchange -an), pool-undefine; the volume is a block device at
# /dev/VG/NAME that `vireo img info` reads, and qcow2 in a logical pool is refused in one line.
# The volume group lives on a loop device over a sparse file, removed at the end.
# Needs root, LVM's tools (lvm2) and the kernel's device-mapper: the nested test host has all
# three; on a host without device-mapper (our development machines' kernel) it exits 77 (skipped)
# and says why.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "e2e-lvm: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-lvm: FAIL: $*"; }
skip() { echo "e2e-lvm: SKIP: $*"; exit 77; }

[ -x "$vireo" ] || { fail "no vireo at $vireo (swift build first)"; exit 1; }
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, LVM)"
command -v vgcreate >/dev/null || skip "LVM's tools are missing (apt install lvm2)"
command -v dmsetup >/dev/null && dmsetup version >/dev/null 2>&1 \
    || skip "this kernel has no device-mapper ($( { dmsetup version 2>&1 || true; } | grep -m1 -iE 'fail|error' || echo 'dmsetup version failed'))"

work=$(mktemp -d)
vg=vireo-e2e-$$
loop= daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    if [ -n "$loop" ]; then
        vgchange -an "$vg" >/dev/null 2>&1; vgremove -f "$vg" >/dev/null 2>&1
        pvremove -f "$loop" >/dev/null 2>&1; losetup -d "$loop"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

truncate -s 256M "$work/pv.img"
loop=$(losetup --find --show "$work/pv.img") || { fail "losetup failed"; exit 1; }
export VIREO_SOCKET=$work/api.sock
# LVM's configuration for this test alone (the daemon runs LVM's tools with this environment):
# no metadata backups (the nested host's /etc is read-only) and device nodes made by LVM itself
# where no udev runs (the nested host has none).
mkdir -p "$work/lvm"
cat >"$work/lvm/lvm.conf" <<'CONF'
backup {
    backup = 0
    archive = 0
}
activation {
    udev_sync = 0
    udev_rules = 0
}
devices {
    obtain_device_list_from_udev = 0
}
CONF
export LVM_SYSTEM_DIR=$work/lvm
"$vireo" daemon --state-dir "$work/state" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$VIREO_SOCKET" ] && break; sleep 0.1; done
[ -S "$VIREO_SOCKET" ] || { fail "the daemon did not start: $(tail -3 "$work/daemon.log")"; exit 1; }

# Runs a vireo command; PASS when it succeeds and its output matches, else FAIL with what it said.
expect() {  # description pattern command...
    local what=$1 pattern=$2 out; shift 2
    if out=$("$vireo" "$@" 2>&1) && grep -qE -- "$pattern" <<<"$out"; then pass "$what"
    else fail "$what: \`vireo $*\` said: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; fi
}
expect_error() {  # description pattern command...
    local what=$1 pattern=$2 out; shift 2
    if ! out=$("$vireo" "$@" 2>&1) && grep -qE -- "$pattern" <<<"$out" && [ "$(grep -c '^error: ' <<<"$out")" -le 2 ]; then pass "$what"
    else fail "$what: \`vireo $*\` said: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; fi
}

expect "pool-define-as logical" "^Pool lvm defined" pool-define-as lvm logical --source-name "$vg" --source-dev "$loop"
expect "pool-build makes the volume group (vgcreate)" "^Pool lvm built" pool-build lvm
vgs "$vg" >/dev/null 2>&1 && pass "volume group $vg exists on $loop" || fail "no volume group $vg after pool-build"
expect "pool-start activates it" "^Pool lvm started" pool-start lvm
expect "pool-list --details shows it active with its space" "lvm +active +no +logical +2[0-9.]+ MiB" pool-list --details
expect "vol-create-as makes a logical volume (lvcreate)" "^Vol disk1 created" vol-create-as lvm disk1 16M
if [ -b "/dev/$vg/disk1" ]; then pass "the volume is a block device at /dev/$vg/disk1"; else fail "no block device /dev/$vg/disk1"; fi
expect "vol-list --details lists it, raw, 16 MiB" "disk1 +/dev/$vg/disk1 +raw +16.00 MiB" vol-list lvm --details
expect "vireo img info reads the volume" "virtual size: 16 MiB" img info "/dev/$vg/disk1"
expect_error "qcow2 in a logical pool is refused in one line" "a logical pool's volumes are raw" vol-create-as lvm disk2 16M --format qcow2
expect_error "a volume larger than the group is LVM's one-line refusal" "Failed to create vol big" vol-create-as lvm big 10G
expect "vol-delete removes it (lvremove)" "^Vol disk1 deleted" vol-delete disk1 --pool lvm
if [ ! -e "/dev/$vg/disk1" ]; then pass "the block device is gone"; else fail "/dev/$vg/disk1 still exists"; fi
"$vireo" vol-create-as lvm disk3 8M >/dev/null 2>&1
expect "vol-delete by path finds its pool" "^Vol disk3 deleted" vol-delete "/dev/$vg/disk3"
expect "pool-destroy deactivates the group" "^Pool lvm destroyed" pool-destroy lvm
expect "pool-undefine forgets it" "^Pool lvm has been undefined" pool-undefine lvm
vgs "$vg" >/dev/null 2>&1 && pass "the volume group stays after undefine (as with virsh)" || fail "the volume group vanished"

echo "e2e-lvm: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
