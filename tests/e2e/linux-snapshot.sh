#!/usr/bin/env bash
# Linux end to end for snapshot and restore: a guest process counts (guest/init/sequence32.c,
# `vireo.sequence=N`), printing each number on the console and appending it to a file on its ext4
# root (virtio-blk, fsync per line). While it counts, the VM is saved (PUT /vm/snapshot with
# then=stop: the vireo run process exits) and resumed by a new process (`vireo run --restore`),
# twice, the second time with guest RAM copied rather than mapped. Afterwards:
#   - the console output of the three processes, end to end, holds 1..N once each, in order;
#   - the file on the disk holds 1..N once each (read with debugfs), and e2fsck finds the file
#     system clean (the guest remounts it read-only before powering off);
#   - the restored processes report `restored_from` and the last one ends with the guest's power-off.
# It needs guest user space (system calls), so it runs where the host profile is native (the
# nested test host: tests/e2e/nested-suite.sh); elsewhere it says so and exits 77 (skipped).
#
# Environment: VIREO_BIN, VIREO_E2E_TIMEOUT (seconds for the guest to start counting, default 300),
# VIREO_E2E_LOG_DIR, VIREO_E2E_SEQUENCE (N, default 200: 20 s of counting).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
timeout_s=${VIREO_E2E_TIMEOUT:-300}
log_dir=${VIREO_E2E_LOG_DIR:-$repo/.build/e2e}
count=${VIREO_E2E_SEQUENCE:-200}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "e2e-snapshot: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-snapshot: FAIL: $*"; }
note() { echo "e2e-snapshot: $*"; }

work=$(mktemp -d)
vm_pid=
cleanup() {
    [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
finish() {
    echo "e2e-snapshot: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

if [ ! -x "$vireo" ]; then fail "no vireo at $vireo (swift build first)"; finish; fi
profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
if [ "$profile" = emulated-kernel-mode ]; then
    note "host profile emulated-kernel-mode: guest processes cannot make system calls here; run it in the nested test host (scripts/nested-host.sh)"
    exit 77
fi
. "$repo/tests/e2e/lib/guest.sh"
guest_files "$repo" || { fail "$guest_error"; finish; }
root_tree "$work/root" "$init32"
disk=$work/root.img
root_image "$work/root" "$disk" 64M || { fail "mkfs.ext4 -d failed"; finish; }

mkdir -p "$log_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
snapshot=$work/vm.snap
cmdline="console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on root=/dev/vda rw panic=-1 vireo.sequence=$count"
note "booting $kernel: 2 vCPUs, 256 MiB, ext4 root on virtio-blk; counting to $count"

# Starts one vireo run process (stage 1 boots, the others restore); its console goes to $log.
start_vm() {
    stage=$1; shift
    log=$log_dir/linux-snapshot-$stamp-$stage.log
    api=$work/api-$stage.sock
    # The guest's own bytes (no VMM notes in between) for the transcript checks.
    "$vireo" run --verbose --api-socket "$api" --serial-log "$work/serial-$stage" "$@" </dev/null >"$log" 2>&1 &
    vm_pid=$!
}
clean() { tr -d '\r' <"$log"; }
# Complete lines only: the last may be half written ("VIREO-INIT: seq 7" of "seq 71": CI once
# planned the next save at 17 from it, a number the guest had long passed).
last_seq() { local lines; lines=$(wc -l <"$log"); head -n "$lines" "$log" | tr -d '\r' | sed -n 's/^VIREO-INIT: seq \([0-9]*\)$/\1/p' | tail -1; }
wait_for() {
    local deadline=$(( $(date +%s) + $2 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        grep -qE -- "$1" <<<"$(clean)" && return 0
        kill -0 "$vm_pid" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}
api_call() { curl -s --max-time 120 --unix-socket "$api" "$@"; }
# What a stage whose guest stopped counting looks like from outside: the VMM's view of the VM and
# its vCPUs (thread, mode, RIP, MP state, pending events, LAPIC timer), and counters 5 s apart.
stall_report() {
    note "stall report, stage $stage ($(kill -0 "$vm_pid" 2>/dev/null && echo 'process running' || echo 'process gone')):"
    note "  GET /vm: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm)"
    note "  GET /vm/stats: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm/stats)"
    note "  GET /vm/vcpus: $(curl -s --max-time 20 --unix-socket "$api" http://vm/vm/vcpus)"
    sleep 5
    note "  GET /vm/stats again: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm/stats)"
    note "  GET /vm/vcpus again: $(curl -s --max-time 20 --unix-socket "$api" http://vm/vm/vcpus)"
    note "  console tail:"; clean | tail -12 | sed 's/^/    | /'
}
# Saves the VM once its count has reached $1, and waits for the process to end.
save_at() {
    if ! wait_for "^VIREO-INIT: seq $1\$" "$timeout_s"; then
        fail "stage $stage: the guest did not count to $1"
        if kill -0 "$vm_pid" 2>/dev/null; then stall_report; else clean | tail -20 | sed 's/^/    | /'; fi
        finish
    fi
    local answer
    answer=$(api_call -X PUT -d "{\"path\":\"$snapshot\",\"then\":\"stop\"}" http://vm/vm/snapshot)
    if grep -q '"state":"stopped"' <<<"$answer"; then pass "stage $stage: saved at seq $(last_seq): $answer"
    else fail "stage $stage: snapshot answer: $answer"; finish; fi
    wait "$vm_pid"; local status=$?
    vm_pid=
    if [ "$status" -eq 0 ]; then pass "stage $stage: vireo run exited 0 after the save"
    else fail "stage $stage: vireo run exited $status after the save"; fi
}

start_vm 1 --kernel "$kernel" --cpus 2 --memory 256M --cmdline "$cmdline" --disk "path=$disk,format=raw"
save_at 10
ls -ls "$snapshot" | sed 's/^/    | /'

started=$(date +%s%N)
start_vm 2 --restore "$snapshot"
if wait_for '^VIREO-INIT: seq' 60; then
    pass "stage 2: the restored guest counts on ($(clean | grep -m1 '^VIREO-INIT: seq')) $(( ($(date +%s%N) - started) / 1000000 )) ms after start; $(clean | grep -m1 -o 'restored in [0-9.]* ms')"
else
    fail "stage 2: the restored guest printed nothing"; clean | tail -20 | sed 's/^/    | /'; finish
fi
info=$(api_call http://vm/vm)
if grep -q "\"restored_from\":\"$snapshot\"" <<<"$info"; then pass "stage 2: GET /vm reports restored_from"
else fail "stage 2: GET /vm: $info"; fi
# The second save a little later in the count, wherever the first left it.
second=$(( $(last_seq) + 10 ))
[ "$second" -lt $((count - 20)) ] || { fail "the guest counted too far before the first save (at $(last_seq) of $count)"; finish; }
save_at "$second"

start_vm 3 --restore "$snapshot" --restore-memory copy
# It counts to the end and powers off; a guest that prints no new number for 60 s has stalled.
seen_seq=$(last_seq) seen_at=$(date +%s)
while kill -0 "$vm_pid" 2>/dev/null; do
    now_seq=$(last_seq)
    if [ "$now_seq" != "$seen_seq" ]; then seen_seq=$now_seq seen_at=$(date +%s)
    elif [ $(( $(date +%s) - seen_at )) -ge 60 ]; then
        fail "stage 3: the guest stopped counting at seq ${seen_seq:-none} (60 s without a new line)"
        stall_report
        kill "$vm_pid" 2>/dev/null
        break
    fi
    sleep 1
done
wait "$vm_pid"; status=$?
vm_pid=
if [ "$status" -eq 0 ] && grep -q '^VIREO-INIT: seq: done' <<<"$(clean)"; then pass "stage 3: the guest finished counting and powered off (status 0)"
else fail "stage 3: status $status; $(clean | tail -5 | tr '\n' ' ')"; fi

# The console, end to end: 1..N once each (a line cut by a save is finished by the next process).
seen=$(cat "$work"/serial-1 "$work"/serial-2 "$work"/serial-3 | tr -d '\r' | sed -n 's/^VIREO-INIT: seq \([0-9]*\)$/\1/p' | tr '\n' ' ')
expected=$(seq 1 "$count" | tr '\n' ' ')
if [ "$seen" = "$expected" ]; then pass "console: 1..$count once each across three processes"
else fail "console sequence: got '$seen'"; fi
# The disk: the same, and a clean file system.
file=$(debugfs -R "cat /vireo/seq.txt" "$disk" 2>/dev/null | tr '\n' ' ')
if [ "$file" = "$expected" ]; then pass "disk: /vireo/seq.txt holds 1..$count once each"
else fail "disk: /vireo/seq.txt holds '$file'"; fi
if fsck_out=$(e2fsck -fn "$disk" 2>&1); then pass "e2fsck -fn: clean ($(tail -1 <<<"$fsck_out"))"
else fail "e2fsck -fn: $(tr '\n' ' ' <<<"$fsck_out")"; fi
finish
