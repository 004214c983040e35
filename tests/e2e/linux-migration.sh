#!/usr/bin/env bash
# Linux end to end for live migration (pre-copy): a guest process counts (guest/init/sequence32.c,
# `vireo.sequence=N`), printing each number on the console and appending it to a file on its ext4
# root (virtio-blk, fsync per line). While it counts, the VM is migrated (PUT /vm/migrate) from
# its `vireo run` process to a new `vireo run --incoming unix:...` process, then on to another,
# VIREO_E2E_MIGRATIONS times (default 4), the disk image being shared storage. For each
# migration: the API answers 202, GET /vm/migration ends "completed" (its downtime_ms, elapsed_ms
# and rounds are reported), the source exits 0, the destination reports `migrated_from` and the
# guest counts on there. Afterwards:
#   - the console output of all the processes, end to end, holds 1..N once each, in order (a line
#     cut by a migration is finished by the next process; guest kernel messages, which printk may
#     put in the middle of a line, are taken out first);
#   - the file on the disk holds 1..N once each (read with debugfs), and e2fsck finds the file
#     system clean (the guest remounts it read-only before powering off);
#   - the last process ends with the guest's power-off (status 0); a guest that stops counting
#     for 60 s fails the test with a stall report (VMM state and device counters, ping, the host's
#     TCP socket, the console tail). After an unclean end the disk is also checked on a copy with
#     its journal replayed, to tell a crash-consistent disk from a corrupted one.
# GET /vm/migration is polled every 5 ms (tests/e2e/lib/migrate.py); the source exits right after
# the switch-over, so the final progress (downtime_ms included) is read from its status file.
# With root (a network namespace), the guest also has a virtio-net NIC (ip= on its command line)
# and sends each number on one TCP connection to a process on the host, which echoes it back
# before the guest goes on (vireo.seqpeer=): that connection must carry 1..N in order, every echo
# arriving, across all the migrations. A single-queue TAP has one owner at a time, and source and
# destination both hold theirs during the switch-over, so the processes alternate between two
# TAPs on one bridge (the destination's --net points the NIC at the other one).
# It needs guest user space (system calls), so it runs where the host profile is native (the
# nested test host: tests/e2e/nested-suite.sh); elsewhere it says so and exits 77 (skipped).
#
# Environment: VIREO_BIN, VIREO_E2E_TIMEOUT (seconds for the guest to start counting, default 300),
# VIREO_E2E_LOG_DIR, VIREO_E2E_SEQUENCE (N, default 800: 80 s of counting),
# VIREO_E2E_MIGRATIONS (default 4; 0: the same run without migrating, a control),
# VIREO_E2E_MIGRATION_NET=auto|off (default auto: with root), VIREO_E2E_MIGRATION_REQUEST (more
# fields for PUT /vm/migrate, a JSON object: '{"auto_converge":false}'),
# VIREO_E2E_MIGRATION_STORAGE=shared|copy (default shared: one image for every process; copy:
# each destination gets its own image path, which it creates, and the migration mirrors the disk
# to it with "copy_storage" — the disk checks then read the last process's image).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
timeout_s=${VIREO_E2E_TIMEOUT:-300}
log_dir=${VIREO_E2E_LOG_DIR:-$repo/.build/e2e}
count=${VIREO_E2E_SEQUENCE:-800}
migrations=${VIREO_E2E_MIGRATIONS:-4}
net_mode=${VIREO_E2E_MIGRATION_NET:-auto}
request_extra=${VIREO_E2E_MIGRATION_REQUEST:-"{}"}
storage=${VIREO_E2E_MIGRATION_STORAGE:-shared}
guest_ip=10.78.0.2
host_ip=10.78.0.1
mac=52:54:00:12:34:78
tcp_port=7778

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "e2e-migration: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-migration: FAIL: $*"; }
note() { echo "e2e-migration: $*"; }

work=$(mktemp -d)
ns=vireo-mig-$$
pids=()       # every process started here, killed on the way out if still there
netns=
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    [ -n "$netns" ] && ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
finish() {
    echo "e2e-migration: $passed passed, $failed failed"
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
case "$storage" in
    shared) ;;
    copy) request_extra=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["copy_storage"]=True; print(json.dumps(d))' "$request_extra") ;;
    *) fail "VIREO_E2E_MIGRATION_STORAGE must be shared or copy, not '$storage'"; finish ;;
esac
# Stage K's disk image: the one image (shared storage), or with copy_storage one per process.
disk_of() { if [ "$storage" = copy ] && [ "$1" -gt 1 ]; then echo "$work/root-$1.img"; else echo "$disk"; fi; }
[ "$migrations" -ge 0 ] 2>/dev/null || { fail "VIREO_E2E_MIGRATIONS must be 0 (a control run: no migration) or more"; finish; }

mkdir -p "$log_dir" || { fail "cannot create the log directory $log_dir (VIREO_E2E_LOG_DIR)"; finish; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)

# The network: two TAPs on a bridge in a fresh namespace (the host's address on the bridge, a
# fixed bridge MAC so that it never changes under the guest's ARP cache), and the TCP peer there.
runner=()
net_args=()
guest_net=
if [ "$net_mode" = auto ] && [ "$(id -u)" -eq 0 ] && ip netns add "$ns" 2>/dev/null; then
    netns=yes
    in_ns() { ip netns exec "$ns" "$@"; }
    if in_ns ip link set lo up && in_ns ip link add br0 type bridge && in_ns ip link set br0 address 02:00:00:78:00:01 \
        && in_ns ip addr add "$host_ip/24" dev br0 && in_ns ip link set br0 up \
        && in_ns ip tuntap add vtap0 mode tap && in_ns ip link set vtap0 master br0 && in_ns ip link set vtap0 up \
        && in_ns ip tuntap add vtap1 mode tap && in_ns ip link set vtap1 master br0 && in_ns ip link set vtap1 up; then
        runner=(ip netns exec "$ns")
    else
        fail "network: cannot set up the bridge and TAPs in namespace $ns"; finish
    fi
    peer_out=$log_dir/linux-migration-$stamp-peer.txt
    "${runner[@]}" python3 "$repo/tests/e2e/lib/seq-peer.py" "$host_ip" "$tcp_port" "$((timeout_s + 60))" 300 \
        "$work/peer.ready" "$count" >"$peer_out" 2>&1 &
    peer_pid=$!
    pids+=("$peer_pid")
    for _ in $(seq 100); do [ -e "$work/peer.ready" ] && break; sleep 0.1; done
    [ -e "$work/peer.ready" ] || { fail "the host TCP peer did not start listening: $(head -c 300 "$peer_out")"; finish; }
    guest_net="ip=$guest_ip::$host_ip:255.255.255.0:vireo:eth0:off vireo.seqpeer=$host_ip:$tcp_port"
    note "network: the guest's NIC on TAP vtap0/vtap1 (alternating per process) on br0 in namespace $ns; TCP peer $host_ip:$tcp_port"
else
    note "network: TCP part not run ($([ "$net_mode" = off ] && echo VIREO_E2E_MIGRATION_NET=off || echo 'needs root for a network namespace and TAPs'))"
fi
# Stage K's devices when they must be named: the NIC on vtap0 for odd stages, vtap1 for even ones.
device_args=()
devices_of() {
    device_args=()
    if [ -n "$guest_net" ]; then device_args=(--disk "path=$(disk_of "$1"),format=raw" --net "tap=vtap$(( ($1 - 1) % 2 )),mac=$mac")
    elif [ "$storage" = copy ]; then device_args=(--disk "path=$(disk_of "$1"),format=raw"); fi
}

cmdline="console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on root=/dev/vda rw panic=-1 $guest_net vireo.sequence=$count"
note "booting $kernel: 2 vCPUs, 256 MiB, ext4 root on virtio-blk; counting to $count; $migrations migrations"

# Stage K's files: its combined stdout/stderr ($log_dir), the guest's own console bytes
# ($work/serial-K, for the transcript checks), its control socket.
stage_log() { echo "$log_dir/linux-migration-$stamp-$1.log"; }
clean_of() { tr -d '\r' <"$(stage_log "$1")"; }
# The numbers stage K's guest has printed so far (complete lines only: the last may be half written).
serial_seqs() {
    local text
    [ -e "$work/serial-$1" ] || return 0
    text=$(cat "$work/serial-$1"; echo .)
    [ "${text: -2}" = $'\n.' ] || text=${text%$'\n'*}
    tr -d '\r' <<<"${text%.}" | sed -n 's/^VIREO-INIT: seq \([0-9]*\)$/\1/p'
}
# The guest's console output of the stages given, end to end, without the guest kernel's messages:
# printk writes to the serial port at any moment, even in the middle of a line of the counting
# process ("VIREO-INIT: seq 523[  190.479568] random: crng init done"), so each "[ seconds] text\n"
# is taken out; with --kernel-lines, only those are printed.
transcript() {
    local mode=guest
    [ "$1" = --kernel-lines ] && { mode=kernel; shift; }
    for stage in "$@"; do cat "$work/serial-$stage" 2>/dev/null; done | python3 -c '
import re, sys
text = sys.stdin.buffer.read().decode("utf-8", "replace").replace("\r", "")
kernel = re.compile(r"\[ *\d+\.\d+\] [^\n]*\n")
sys.stdout.write("".join(kernel.findall(text)) if sys.argv[1] == "kernel" else kernel.sub("", text))
' "$mode"
}
last_seq_of() { serial_seqs "$1" | tail -1; }
# Starts stage K: vireo run with the arguments given; sets stage_pid[K].
declare -A stage_pid
start_stage() {
    local stage=$1; shift
    "${runner[@]}" "$vireo" run --verbose --api-socket "$work/api-$stage.sock" --serial-log "$work/serial-$stage" \
        --status-file "$work/status-$stage.json" "$@" \
        </dev/null >"$(stage_log "$stage")" 2>&1 &
    stage_pid[$stage]=$!
    pids+=("$!")
}
alive() { kill -0 "${stage_pid[$1]}" 2>/dev/null; }
# Waits until stage K's combined log matches, or K is gone; false on timeout.
wait_log() {
    local stage=$1 pattern=$2 deadline=$(( $(date +%s) + $3 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        grep -qE -- "$pattern" <<<"$(clean_of "$stage")" && return 0
        alive "$stage" || { grep -qE -- "$pattern" <<<"$(clean_of "$stage")"; return; }
        sleep 0.5
    done
    return 1
}
# Waits until stage K's guest has counted to at least N; false on timeout or exit.
wait_seq() {
    local stage=$1 at_least=$2 deadline=$(( $(date +%s) + $3 )) last
    while [ "$(date +%s)" -lt "$deadline" ]; do
        last=$(last_seq_of "$stage")
        [ -n "$last" ] && [ "$last" -ge "$at_least" ] && return 0
        alive "$stage" || return 1
        sleep 0.3
    done
    return 1
}
# Waits (bounded) for stage K's process to end; sets exit_status to its status, or "running".
wait_exit() {
    local stage=$1 deadline=$(( $(date +%s) + $2 ))
    while alive "$stage" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    if alive "$stage"; then exit_status=running; return; fi
    wait "${stage_pid[$stage]}"; exit_status=$?
}
tail_of() { clean_of "$1" | tail -"${2:-15}" | sed 's/^/    | /'; }
# What a stage whose guest stopped counting looks like from outside: the VMM's view (state,
# device counters twice, 5 s apart), the network's (ping, the host's TCP socket, the bridge), the
# peer's, and the console's tail.
stall_report() {
    local stage=$1 api=$work/api-$1.sock
    note "stall report, stage $stage ($(alive "$stage" && echo 'process running' || echo 'process gone')):"
    note "  GET /vm: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm)"
    note "  GET /vm/stats: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm/stats)"
    note "  GET /vm/vcpus: $(curl -s --max-time 20 --unix-socket "$api" http://vm/vm/vcpus)"
    if [ -n "$guest_net" ]; then
        note "  ping $guest_ip: $("${runner[@]}" ping -c 3 -W 2 "$guest_ip" 2>&1 | grep -E 'transmitted|unreachable' | head -1)"
        note "  host TCP socket: $("${runner[@]}" ss -tni "( sport = :$tcp_port )" 2>&1 | tail -n +2 | tr -s ' \n' ' ')"
        note "  bridge: $("${runner[@]}" bridge fdb show br br0 2>&1 | grep -i "$mac" | tr '\n' ' '); $(for t in vtap0 vtap1; do echo -n "$t: $("${runner[@]}" ip -s -o link show "$t" 2>&1 | tr -s ' ' | cut -c1-300) "; done)"
        note "  peer: $(tail -2 "$peer_out" | tr '\n' ' ')"
    else
        sleep 3
    fi
    note "  GET /vm/stats again: $(curl -s --max-time 10 --unix-socket "$api" http://vm/vm/stats)"
    note "  console tail:"; tail_of "$stage" 12
}
# "1..N once each, in order" or where the numbers given first differ from it.
describe_seq() {
    python3 -c '
import sys
got, n = sys.argv[1].split(), int(sys.argv[2])
for i, value in enumerate(got):
    if value != str(i + 1):
        after = " ".join(got[i + 1:i + 6])
        print(f"{len(got)} numbers: 1..{i} in order, then {value} where {i + 1} was due (then: {after})")
        break
else:
    print(f"1..{n} once each" if len(got) == n else f"1..{len(got)} in order, then nothing (of {n})")
' "$1" "$2"
}
value() { sed -n "s/^$1=//p" "$2" | tail -1; }

devices_of 1
[ -n "$guest_net" ] || device_args=(--disk "path=$disk,format=raw")
start_stage 1 --kernel "$kernel" --cpus 2 --memory 256M --cmdline "$cmdline" "${device_args[@]}"
started=$(date +%s)
if ! wait_seq 1 5 "$timeout_s"; then
    fail "stage 1: the guest did not count to 5 within ${timeout_s}s"; tail_of 1 30; finish
fi
note "stage 1: the guest counts ($(( $(date +%s) - started ))s after start)"
if [ -n "$guest_net" ]; then
    if grep -q '^VIREO-INIT: seq: tcp: connected to the peer' <<<"$(clean_of 1)"; then pass "stage 1: the guest process connected to the host's TCP peer"
    else fail "stage 1: no TCP connection: $(clean_of 1 | grep -m1 'VIREO-INIT: error: seq: tcp' || echo 'no line')"; fi
fi

summary=()
for migration in $(seq 1 "$migrations"); do
    src=$migration dst=$((migration + 1))
    address=unix:$work/migrate-$dst.sock
    devices_of "$dst"
    start_stage "$dst" --incoming "$address" "${device_args[@]}"
    if ! wait_log "$dst" '^vireo: waiting for a migration on ' 60; then
        fail "migration $migration: stage $dst did not listen on $address within 60s"; tail_of "$dst"; finish
    fi
    before=$(last_seq_of "$src")
    out=$log_dir/linux-migration-$stamp-migrate-$migration.txt
    python3 "$repo/tests/e2e/lib/migrate.py" "$work/api-$src.sock" "$address" 300 "$request_extra" >"$out" 2>&1
    ended=$(value ended "$out")
    detail="$(value rounds "$out") round(s), $(value ram_bytes_transferred "$out") bytes of RAM sent; phases seen: $(value phases "$out") ($(value polls "$out") polls)"
    if [ "$(value put_status "$out")" != 202 ] || { [ "$ended" != completed ] && [ "$ended" != gone ]; }; then
        fail "migration $migration (stage $src -> $dst at seq ${before:-?}): PUT answered $(value put_status "$out") $(value put_answer "$out"); ended $ended; $detail; last progress: $(value last "$out")"
        note "stage $src (source) log tail:"; tail_of "$src" 20
        note "stage $dst (destination) log tail:"; tail_of "$dst" 20
        finish
    fi
    wait_exit "$src" 120
    migrated_line=$(clean_of "$src" | grep -m1 -oE 'vireo: migrated to [^;]*')
    if [ "$exit_status" = 0 ] && [ -n "$migrated_line" ]; then pass "migration $migration (stage $src -> $dst at seq ${before:-?}): PUT /vm/migrate 202; the source exited 0 ($migrated_line); $detail"
    elif [ "$exit_status" = 0 ]; then
        # Status 0 without "migrated to" is the guest's own end (poweroff, or a reset: panic=-1).
        fail "migration $migration (stage $src -> $dst at seq ${before:-?}): the source exited 0 without migrating (the guest ended: reset or poweroff); $detail; last progress: $(value last "$out")"
        note "stage $src (source) guest kernel messages: $(transcript --kernel-lines "$src" | tail -40 | tr '\n' ' ')"
        note "stage $src (source) log tail:"; tail_of "$src" 40
        note "stage $dst (destination) log tail:"; tail_of "$dst" 10
        finish
    elif [ "$exit_status" = running ]; then fail "migration $migration: the source (stage $src) still runs 120s later; last progress: $(value last "$out")"; tail_of "$src"; finish
    else fail "migration $migration: the source (stage $src) exited $exit_status; last progress: $(value last "$out")"; tail_of "$src"; tail_of "$dst"; finish; fi
    # The final progress: the source writes it into its status file as it exits (GET /vm/migration
    # shows it only for the moment before).
    final=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])).get("migration") or {}; print(" ".join(f"{k}={m.get(k)}" for k in ("phase","downtime_ms","elapsed_ms","rounds","throttle_percent")))' \
        "$work/status-$src.json" 2>/dev/null)
    if [ "$ended" != completed ] && grep -q 'phase=completed' <<<"$final"; then
        for key in downtime_ms elapsed_ms rounds throttle_percent; do
            echo "$key=$(sed -n "s/.*$key=\([^ ]*\).*/\1/p" <<<"$final")" >>"$out"
        done
        ended=completed
        note "migration $migration: final progress from the source's status file: $final"
    fi
    if [ "$ended" = completed ] && [ -n "$(value downtime_ms "$out")" ]; then
        pass "migration $migration: GET /vm/migration: completed, downtime $(value downtime_ms "$out") ms, $(value elapsed_ms "$out") ms in all"
        summary+=("migration $migration at seq ${before:-?}: downtime $(value downtime_ms "$out") ms, total $(value elapsed_ms "$out") ms, $(value rounds "$out") round(s), throttle $(value throttle_percent "$out")%")
    else
        fail "migration $migration: GET /vm/migration never showed the end (completed, downtime_ms): the source's socket went away first; last answer: $(value last "$out")"
        summary+=("migration $migration at seq ${before:-?}: downtime not reported (the source exited before GET /vm/migration showed completed); phases seen: $(value phases "$out"); last seen: $(value rounds "$out") round(s), throttle $(value throttle_percent "$out")%")
    fi
    if wait_seq "$dst" $(( ${before:-0} + 2 )) 120; then
        pass "migration $migration: the guest counts on in stage $dst (first line there: seq $(serial_seqs "$dst" | head -1), now $(last_seq_of "$dst"))"
    else
        fail "migration $migration: stage $dst does not count on (last seq ${before:-?} before; $(alive "$dst" && echo running || echo exited))"
        stall_report "$dst"; finish
    fi
    info=$(curl -s --max-time 20 --unix-socket "$work/api-$dst.sock" http://vm/vm)
    if grep -q '"migrated_from":"' <<<"$info"; then pass "migration $migration: GET /vm on stage $dst: $(grep -o '"migrated_from":"[^"]*"' <<<"$info")"
    else fail "migration $migration: GET /vm on stage $dst has no migrated_from: $info"; fi
    now=$(last_seq_of "$dst")
    if [ "$migration" -lt "$migrations" ] && [ "$now" -ge $((count - 40)) ]; then
        fail "the guest counted too far ($now of $count) for $((migrations - migration)) more migration(s): raise VIREO_E2E_SEQUENCE"; finish
    fi
done

last=$((migrations + 1))
# The last stage counts to the end and powers off; a guest that stops counting for 60 s has stalled.
seen_seq=$(last_seq_of "$last") seen_at=$(date +%s) deadline=$(( $(date +%s) + (count - ${seen_seq:-0}) / 2 + 180 ))
while alive "$last" && [ "$(date +%s)" -lt "$deadline" ]; do
    now_seq=$(last_seq_of "$last")
    if [ "$now_seq" != "$seen_seq" ]; then seen_seq=$now_seq seen_at=$(date +%s)
    elif [ $(( $(date +%s) - seen_at )) -ge 60 ]; then break; fi
    sleep 1
done
if alive "$last"; then
    fail "stage $last: the guest stopped counting at seq ${seen_seq:-?} ($(( $(date +%s) - seen_at )) s without a new line)"
    stall_report "$last"
    kill "${stage_pid[$last]}" 2>/dev/null
fi
wait_exit "$last" 30
status=$exit_status
if [ "$status" = 0 ] && grep -q '^VIREO-INIT: seq: done' <<<"$(clean_of "$last")"; then pass "stage $last: the guest finished counting and powered off (status 0)"
else fail "stage $last: status $status; $(clean_of "$last" | tail -3 | tr '\n' ' ')"; fi

# The console, end to end: 1..N once each (a line cut by a migration is finished by the next process).
seen=$(transcript $(seq 1 "$last") | sed -n 's/^VIREO-INIT: seq \([0-9]*\)$/\1/p' | tr '\n' ' ')
expected=$(seq 1 "$count" | tr '\n' ' ')
if [ "$seen" = "$expected" ]; then pass "console: 1..$count once each, in order, across $last process(es)"
else fail "console sequence: $(describe_seq "$seen" "$count")"; fi
errors=$(transcript $(seq 1 "$last") | grep '^VIREO-INIT: error' | head -3 | tr '\n' ' ')
[ -z "$errors" ] || fail "the guest reported: $errors"
if [ "$last" -gt 1 ]; then
    kernel_lines=$(transcript --kernel-lines $(seq 2 "$last") | head -5 | tr '\n' ' ')
    note "guest kernel messages after the first migration: ${kernel_lines:-none}"
fi
# The disk: the same, and a clean file system (with copy_storage: the last destination's image,
# which it created and the migrations filled).
disk=$(disk_of "$last")
if [ "$storage" = copy ] && [ "$last" -gt 1 ]; then
    if grep -q 'created raw image' <<<"$(clean_of 2)"; then pass "copy_storage: stage 2 created its own image: $(clean_of 2 | grep -m1 -o 'created raw image.*')"
    else fail "copy_storage: stage 2 did not say it created its image"; fi
fi
file=$(debugfs -R "cat /vireo/seq.txt" "$disk" 2>/dev/null | tr '\n' ' ')
if [ "$file" = "$expected" ]; then pass "disk: /vireo/seq.txt holds 1..$count once each"
else fail "disk: /vireo/seq.txt holds $(describe_seq "$file" "$count")"; fi
if fsck_out=$(e2fsck -fn "$disk" 2>&1); then pass "e2fsck -fn: clean ($(tail -1 <<<"$fsck_out"))"
else
    fail "e2fsck -fn: $(tr '\n' ' ' <<<"$fsck_out")"
    # After a guest that did not shut down, the journal may hold what is missing: replay it on a
    # copy (e2fsck -p) and look again, to tell a crash-consistent disk from a corrupted one.
    cp --sparse=always "$disk" "$work/replayed.img"
    replay_out=$(e2fsck -fp "$work/replayed.img" 2>&1); replay_status=$?
    note "after replaying the journal on a copy: e2fsck -fp status $replay_status ($(tail -2 <<<"$replay_out" | tr '\n' ' ')); /vireo/seq.txt there: $(describe_seq "$(debugfs -R "cat /vireo/seq.txt" "$work/replayed.img" 2>/dev/null | tr '\n' ' ')" "$count")"
fi
# The TCP stream: one connection across every migration, nothing lost, every echo back.
if [ -n "$guest_net" ]; then
    for _ in $(seq 50); do kill -0 "$peer_pid" 2>/dev/null || break; sleep 0.2; done
    kill -TERM "$peer_pid" 2>/dev/null && sleep 1   # still waiting: it says for what
    if grep -q '^peer: OK' "$peer_out" && grep -q '^VIREO-INIT: seq: tcp: the peer echoed every number' <<<"$(clean_of "$last")"; then
        pass "tcp: $(sed -n 's/^peer: OK: //p' "$peer_out"), across $migrations migrations"
    else
        fail "tcp: $(grep -E '^peer: (FAIL|OK)' "$peer_out" || head -c 300 "$peer_out"); guest: $(for stage in $(seq 1 "$last"); do clean_of "$stage"; done | grep -E '^VIREO-INIT: (error: )?seq: tcp' | tail -2 | tr '\n' ' ')"
    fi
    note "$(grep '^peer: longest pauses' "$peer_out") (the guest waits 100 ms between numbers)"
fi
if [ "$migrations" -gt 0 ]; then
    note "timings (GET /vm/migration of each source):"
    for line in "${summary[@]}"; do note "  $line"; done
fi
finish
