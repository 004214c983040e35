#!/usr/bin/env bash
# VM resource limits on a pure cgroup v2 host, through a real daemon (issue 14 item 3): the VMM
# runs in <cgroup2>/<partition>/<vm> with cputune/memtune written as libvirt maps them (cpu.weight
# from shares, cpu.max, memory.max, memory.high), the controllers enabled in the parents'
# cgroup.subtree_control, the group gone with the VM; a guest (mb-touch) that touches more RAM
# than memtune's hard limit gets its VMM killed by the kernel's OOM killer and the daemon reports
# it so; blkiotune becomes io.max on a loop device where the kernel has the io controller's
# throttling, and a path that is not a block device is refused in one line.
# Runs in the nested test host (tests/e2e/nested-suite.sh): L1 mounts no cgroup file system, so
# this mounts cgroup2 at /sys/fs/cgroup (in the suite's own mount namespace) when nothing is
# there. A host with v1 controllers at /sys/fs/cgroup (our development machines) exits 77
# (skipped): DaemonCgroupTests covers v1 there. Needs root, /dev/kvm and the multiboot test
# guests in .build/test-guests (make -C TestGuests OUT=.build/test-guests; nested.sh does it).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
guests=${VIREO_TEST_GUESTS:-$repo/.build/test-guests}
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "e2e-cgroups: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-cgroups: FAIL: $*"; }
skip() { echo "e2e-cgroups: SKIP: $*"; exit 77; }

[ -x "$vireo" ] || { fail "no vireo at $vireo (swift build first)"; exit 1; }
for guest in mb-echo mb-touch; do
    [ -f "$guests/$guest.elf" ] || { fail "no $guests/$guest.elf (make -C TestGuests OUT=.build/test-guests)"; exit 1; }
done
[ "$(id -u)" -eq 0 ] || skip "needs root (cgroups)"
[ -c /dev/kvm ] || skip "no /dev/kvm"

cg=/sys/fs/cgroup
mounted=
# Field 5 is the mount point; the type follows the " - " separator.
fstype=$(awk '$5 == "/sys/fs/cgroup" { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' /proc/self/mountinfo)
case "$fstype" in
    cgroup2) ;;
    "")
        grep -q ' - cgroup ' /proc/self/mountinfo && skip "cgroup v1 hierarchies are mounted elsewhere; not a pure v2 host"
        mount -t cgroup2 none "$cg" || skip "cannot mount cgroup2 at $cg"
        mounted=yes ;;
    *) skip "$cg is $fstype, not cgroup2 (a v1 or hybrid host: DaemonCgroupTests covers v1)" ;;
esac
for controller in cpu memory; do
    grep -qw "$controller" "$cg/cgroup.controllers" || skip "this kernel's cgroup2 has no $controller controller ($(cat "$cg/cgroup.controllers"))"
done

work=$(mktemp -d)
partition=vireo-e2e-$$
loop= daemon_pid=
export VIREO_SOCKET=$work/api.sock
cleanup() {
    for vm in limited greedy throttled; do "$vireo" destroy "$vm" >/dev/null 2>&1; done
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    for group in "$cg/$partition"/*/; do [ -d "$group" ] && rmdir "$group" 2>/dev/null; done
    rmdir "$cg/$partition" 2>/dev/null
    [ -n "$loop" ] && losetup -d "$loop"
    [ -n "$mounted" ] && umount "$cg"
    rm -rf "$work"
}
trap cleanup EXIT

"$vireo" daemon --state-dir "$work/state" --cgroup-partition "$partition" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$VIREO_SOCKET" ] && break; sleep 0.1; done
[ -S "$VIREO_SOCKET" ] || { fail "the daemon did not start: $(tail -3 "$work/daemon.log")"; exit 1; }
grep -qF "VM cgroups: v2, $cg/$partition/<vm>" "$work/daemon.log" && pass "the daemon found cgroup v2" \
    || fail "the daemon did not find cgroup v2: $(head -3 "$work/daemon.log")"

check() {  # description expected file
    local got
    got=$(cat "$3" 2>&1)
    [ "$got" = "$2" ] && pass "$1" || fail "$1: $3 holds '$got', expected '$2'"
}
define() {  # name yaml
    printf '%s\n' "$2" >"$work/$1.yaml"
    "$vireo" define "$work/$1.yaml" >/dev/null 2>"$work/define.err" || fail "define $1: $(cat "$work/define.err")"
}
domid() { "$vireo" dominfo "$1" | awk '$1 == "Id:" { print $2 }'; }

# 1. A VM with cputune and memtune: placed, limited, removed.
define limited "name: limited
memory: 32M
os: {kernel: $guests/mb-echo.elf}
onReboot: destroy
cputune: {shares: 512, period: 50000, quota: 25000}
memtune: {hardLimit: 256MiB, softLimit: 128MiB}"
if out=$("$vireo" start limited 2>&1); then pass "start limited"; else fail "start limited: $out"; fi
pid=$(domid limited)
group=$cg/$partition/limited
check "/proc/PID/cgroup puts the VMM in its group" "0::/$partition/limited" "/proc/$pid/cgroup"
grep -qw "$pid" "$group/cgroup.procs" && pass "cgroup.procs lists the VMM" || fail "cgroup.procs: $(cat "$group/cgroup.procs" 2>&1)"
for parent in "$cg" "$cg/$partition"; do
    controls=$(cat "$parent/cgroup.subtree_control")
    [[ " $controls " == *" cpu "* && " $controls " == *" memory "* ]] && pass "$parent/cgroup.subtree_control enables cpu and memory" \
        || fail "$parent/cgroup.subtree_control is '$controls'"
done
check "cpu.weight: shares 512 as systemd converts them" "50" "$group/cpu.weight"
check "cpu.max: quota and period" "25000 50000" "$group/cpu.max"
check "memory.max: hard_limit" "$((256 << 20))" "$group/memory.max"
check "memory.high: soft_limit" "$((128 << 20))" "$group/memory.high"
current=$(cat "$group/memory.current" 2>/dev/null || echo 0)
[ "$current" -gt $((1 << 20)) ] && pass "guest RAM is charged to the group (memory.current $current)" \
    || fail "memory.current is $current"
stats=$("$vireo" domstats limited 2>&1)
grep -qx "  vireo.cgroup=/$partition/limited" <<<"$stats" && grep -qx "  vireo.cgroup.memory.hard_limit=262144" <<<"$stats" \
    && pass "domstats shows the group and its limit" || fail "domstats: $(tr '\n' ' ' <<<"$stats")"
"$vireo" destroy limited >/dev/null 2>&1
[ ! -e "$group" ] && pass "the group goes with the VM" || fail "$group is still there after destroy"

# 2. A guest that touches 128 MiB against a 64 MiB hard limit: the kernel's OOM killer ends it.
# With swap, memory.max alone would push pages out instead: then swap is limited too (swap.max 0).
swap=
[ "$(wc -l </proc/swaps)" -gt 1 ] && swap=", swapHardLimit: 64MiB"
define greedy "name: greedy
memory: 128M
os: {kernel: $guests/mb-touch.elf}
onReboot: destroy
memtune: {hardLimit: 64MiB$swap}"
"$vireo" start greedy >"$work/greedy.out" 2>&1
for _ in $(seq 150); do [ "$("$vireo" domstate greedy 2>/dev/null)" = "shut off" ] && break; sleep 0.2; done
state=$("$vireo" domstate --reason greedy 2>&1)
[ "$state" = "shut off (crashed)" ] && pass "the OOM-killed VM is shut off (crashed)" || fail "greedy is '$state'"
stats=$("$vireo" domstats greedy 2>&1)
grep -qx "  vireo.last_exit=killed by the host's OOM killer: memtune hard_limit 64MiB reached" <<<"$stats" \
    && pass "its last exit names the OOM killer and the limit" || fail "domstats greedy: $(tr '\n' ' ' <<<"$stats")"
grep -q "VM 'greedy' .*killed by the host's OOM killer" "$work/daemon.log" && pass "the daemon's log says so" \
    || fail "daemon log: $(tail -3 "$work/daemon.log")"
console=$(cat "$work/state/vms/greedy/serial.log" 2>/dev/null)
grep -q "touch: 32 MiB" <<<"$console" && ! grep -q "touch: done" <<<"$console" \
    && pass "the guest was stopped while touching its RAM" || fail "serial log: $(tr '\n' ' ' <<<"$console" | cut -c1-300)"
[ ! -e "$cg/$partition/greedy" ] && pass "the OOM-killed VM's group is removed" || fail "$cg/$partition/greedy stays"

# 3. blkiotune: io.max on a block device; anything else refused in one line.
define notblock "name: notblock
memory: 32M
os: {kernel: $guests/mb-echo.elf}
blkiotune: {devices: [{path: /dev/null, readIopsSec: 100}]}"
out=$("$vireo" start notblock 2>&1)
[ $? -ne 0 ] && grep -q "blkiotune device /dev/null: not a block device" <<<"$out" && [ "$(wc -l <<<"$out")" -le 2 ] \
    && pass "a blkiotune path that is not a block device is refused in one line" || fail "start notblock: $out"
if grep -qw io "$cg/cgroup.controllers" && [ -e "$cg/$partition/io.max" ]; then
    truncate -s 64M "$work/disk.img"
    loop=$(losetup --find --show "$work/disk.img") || fail "losetup"
    majmin=$(( 0x$(stat -c %t "$loop") )):$(( 0x$(stat -c %T "$loop") ))
    define throttled "name: throttled
memory: 32M
os: {kernel: $guests/mb-echo.elf}
onReboot: destroy
blkiotune: {devices: [{path: $loop, readBytesSec: 1MiB, writeIopsSec: 100}]}"
    if out=$("$vireo" start throttled 2>&1); then
        check "io.max: the device's read bandwidth and write IOPS" "$majmin rbps=1048576 wbps=max riops=max wiops=100" \
            "$cg/$partition/throttled/io.max"
    else
        fail "start throttled: $out"
    fi
    "$vireo" destroy throttled >/dev/null 2>&1
else
    echo "e2e-cgroups: note: no io.max here (the kernel's io controller lacks throttling); io.max not checked"
fi

echo "e2e-cgroups: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
