#!/usr/bin/env bash
# Snapshot and restore: Vireo vs QEMU (Debian's qemu-system-x86_64 -M pc, KVM) on the same guest
# in the same run, for each guest RAM size given (default 256M and 4G).
#
#   benchmarks/snapshot/run.sh [--sizes "256M 4G"] [--rounds N] [--vireo PATH] [--work DIR]
#
# The guest is TestGuests' mb-user.elf with `ticks fill=N`: it fills N MiB of its RAM with a
# pattern (so snapshots carry real data: 200 MiB of a 256 MiB guest, 2800 MiB of a 4 GiB one),
# then prints a tick about every 10 ms, re-checking one MiB of the fill each time. Measured:
#   1. snapshot time: Vireo `PUT /vm/snapshot` with then=stop (curl's total time; the VM is paused
#      throughout; the file is fsynced before the answer) vs QEMU `stop`, `migrate "exec:cat >
#      FILE"` until "completed", then `sync FILE` (the same durability; also shown without it);
#   2. restore to running: process start -> the first tick the restored guest prints (Vireo
#      `vireo run --restore FILE`, memory mapped; also --restore-memory copy) vs QEMU
#      `-incoming "exec:cat FILE"` plus `cont` once loaded (the VM was stopped for the save); and
#      Vireo's own figure from `vireo run -v` (snapshot opened
#      and checked, RAM mapped, devices and vCPUs loaded), without process start;
#   3. file size on disk (zero pages are holes in Vireo's file).
# Medians of --rounds (default 3). The page cache is not dropped between rounds: both VMMs read
# their files warm. The restored guests' tick lines also prove the fill survived (a wrong word
# would print "corrupt").
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sizes="256M 4G" rounds=3 vireo="" work=""
die() { echo "snapshot/run.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --vireo) vireo=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
log() { echo "snapshot/run.sh: $*" >&2; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (scripts/setup.sh installs it)"
if [ -z "$vireo" ]; then
    vireo=$repo/.build-bench/release/vireo
    if [ ! -x "$vireo" ]; then
        log "building a release vireo in .build-bench (minutes)"
        (cd "$repo" && swift build -c release --scratch-path .build-bench --product vireo >&2)
    fi
fi
[ -x "$vireo" ] || die "no vireo at $vireo"
work=${work:-$(mktemp -d)}
mkdir -p "$work"
make -s -C "$repo/TestGuests" OUT="$work/guests" >&2
guest=$work/guests/mb-user.elf
# shellcheck source=../vmm/qemu-cpu.sh
. "$repo/benchmarks/vmm/qemu-cpu.sh"
qemu_cpu_pick
log "QEMU: $QEMU_CPU_NOTE"
profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
log "Vireo host profile: $profile (passed to every run, so no run pays for the probe)"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Waits until FILE has a line matching RE (bounded); prints nothing, fails on timeout.
wait_line() {
    local deadline=$(( $(date +%s) + ${3:-120} ))
    until grep -qE -- "$2" "$1" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.002
    done
}
ticks_after() { grep -c '^user: tick ' "$1" 2>/dev/null || true; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
# One QMP command on socket $1; prints its answer.
qmp() {
    python3 - "$1" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()  # greeting
for command in ('{"execute":"qmp_capabilities"}', sys.argv[2]):
    f.write(command + "\n"); f.flush()
    while True:
        answer = json.loads(f.readline())
        if "event" not in answer: break
print(json.dumps(answer))
PY
}

declare -A result
for size in $sizes; do
    mib=$(( $(numfmt --from=iec "$size") >> 20 ))
    fill=$(( mib > 3072 ? 2800 : mib - 56 ))
    cmdline="ticks=100000000 spin=40000000 fill=$fill"
    log "== $size guest, $fill MiB filled"
    for round in $(seq "$rounds"); do
        # ---- Vireo
        # Every log is removed before its VMM starts: QEMU truncates its serial file only once it
        # runs, and a stale "tick" from the previous round must not be taken for this one's.
        rm -f "$work"/v1.log "$work"/v2.log "$work"/q1.log "$work"/q2.log
        snap=$work/vireo-$size.snap; rm -f "$snap"
        "$vireo" run --host-profile "$profile" --kernel "$guest" --memory "$size" --cmdline "$cmdline" \
            --api-socket "$work/v.sock" </dev/null >"$work/v1.log" 2>&1 &
        pid=$!
        wait_line "$work/v1.log" '^user: tick 2$' 300 || die "vireo: the guest did not start ticking ($(tail -2 "$work/v1.log"))"
        t=$(curl -s -o "$work/v-snap.json" -w '%{time_total}' --max-time 600 --unix-socket "$work/v.sock" \
            -X PUT -d "{\"path\":\"$snap\",\"then\":\"stop\"}" http://vm/vm/snapshot)
        wait "$pid" || true
        grep -q '"state":"stopped"' "$work/v-snap.json" || die "vireo snapshot failed: $(cat "$work/v-snap.json")"
        result[$size,vireo,save]+="$(awk -v t="$t" 'BEGIN { printf "%.1f", t * 1000 }') "
        result[$size,vireo,bytes]=$(du -k "$snap" | cut -f1)
        for mode in mapped copy; do
            rm -f "$work/v2.log"
            start=$(now_ms)
            "$vireo" run -v --host-profile "$profile" --restore "$snap" --restore-memory "$mode" --api-socket "$work/v.sock" \
                </dev/null >"$work/v2.log" 2>&1 &
            pid=$!
            wait_line "$work/v2.log" '^user: tick [0-9]+$' 120 || die "vireo: the restored guest did not tick ($(tail -3 "$work/v2.log"))"
            grep -q 'entering cpl3' "$work/v2.log" && die "vireo: the restored guest started from the beginning"
            result[$size,vireo,$mode]+="$(( $(now_ms) - start )) "
            grep -q corrupt "$work/v2.log" && die "vireo: the restored guest found its memory corrupt"
            internal=$(sed -n 's/.*restored in \([0-9.]*\) ms.*/\1/p' "$work/v2.log")
            result[$size,vireo,$mode-internal]+="$internal "
            kill "$pid"; wait "$pid" 2>/dev/null || true
        done
        # ---- QEMU
        qsnap=$work/qemu-$size.mig; rm -f "$qsnap"
        qemu=(qemu-system-x86_64 -accel kvm -cpu "$QEMU_CPU" -M pc -m "$size" -nodefaults -no-user-config
              -display none -kernel "$guest" -append "$cmdline")
        "${qemu[@]}" -serial "file:$work/q1.log" -qmp "unix:$work/q.qmp,server=on,wait=off" &
        pid=$!
        wait_line "$work/q1.log" '^user: tick 2$' 300 || die "qemu: the guest did not start ticking"
        grep -q '^user: filled' "$work/q1.log" || die "qemu: tick 2 without the fill"
        start=$(now_ms)
        qmp "$work/q.qmp" '{"execute":"stop"}' >/dev/null
        qmp "$work/q.qmp" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > $qsnap\"}}" >/dev/null
        until qmp "$work/q.qmp" '{"execute":"query-migrate"}' | grep -qE '"status": *"(completed|failed)"'; do sleep 0.005; done
        # Vireo fsyncs its file before answering; `cat > FILE` does not: sync it for the same
        # guarantee (the figure without it is printed too).
        result[$size,qemu,save-nosync]+="$(( $(now_ms) - start )) "
        sync "$qsnap"
        result[$size,qemu,save]+="$(( $(now_ms) - start )) "
        kill "$pid"; wait "$pid" 2>/dev/null || true
        result[$size,qemu,bytes]=$(du -k "$qsnap" | cut -f1)
        start=$(now_ms)
        "${qemu[@]}" -serial "file:$work/q2.log" -qmp "unix:$work/q2.qmp,server=on,wait=off" -incoming "exec:cat $qsnap" &
        pid=$!
        # The VM was stopped for the save, so QEMU keeps it paused after loading: `cont` once it
        # has (what libvirt does after a restore).
        until [ -S "$work/q2.qmp" ] && qmp "$work/q2.qmp" '{"execute":"query-status"}' 2>/dev/null | grep -qE '"status": *"(paused|postmigrate|running)"'; do
            sleep 0.002
        done
        qmp "$work/q2.qmp" '{"execute":"cont"}' >/dev/null
        wait_line "$work/q2.log" '^user: tick [0-9]+$' 120 || die "qemu: the restored guest did not tick"
        grep -q 'entering cpl3' "$work/q2.log" && die "qemu: the restored guest started from the beginning"
        result[$size,qemu,restore]+="$(( $(now_ms) - start )) "
        kill "$pid"; wait "$pid" 2>/dev/null || true
        log "round $round done"
    done
done

med() { tr ' ' '\n' <<<"${result[$1]:-}" | grep -v '^$' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }
echo "| guest RAM | metric | Vireo | QEMU pc | Vireo/QEMU |"
echo "|---|---|---|---|---|"
for size in $sizes; do
    v=$(med "$size,vireo,save"); q=$(med "$size,qemu,save")
    echo "| $size | snapshot (VM stopped → file complete and fsynced), ms | $v | $q | $(ratio "$v" "$q") |"
    echo "| $size | (QEMU without the fsync: migrate status completed), ms | – | $(med "$size,qemu,save-nosync") | – |"
    v=$(med "$size,vireo,mapped"); q=$(med "$size,qemu,restore")
    echo "| $size | restore: process start → first guest tick, ms (Vireo RAM mapped) | $v | $q | $(ratio "$v" "$q") |"
    v=$(med "$size,vireo,copy")
    echo "| $size | same, Vireo RAM copied (--restore-memory copy) | $v | $q | $(ratio "$v" "$q") |"
    echo "| $size | Vireo's own restore time (vireo run -v: file checked, RAM mapped / copied, state loaded), ms | $(med "$size,vireo,mapped-internal") / $(med "$size,vireo,copy-internal") | – | – |"
    echo "| $size | file size on disk, MiB | $(( ${result[$size,vireo,bytes]} / 1024 )) | $(( ${result[$size,qemu,bytes]} / 1024 )) | – |"
done
