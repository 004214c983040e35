#!/usr/bin/env bash
# Live migration (pre-copy): Vireo vs QEMU (Debian's qemu-system-x86_64 -M pc, KVM) on the same
# guest in the same run. Both migrate between two processes on this machine.
#
#   benchmarks/migration/run.sh [--rounds N] [--memory 1G] [--churn MIB] [--tick-hz HZ] [--spin N]
#                               [--downtime MS] [--vireo PATH] [--work DIR] [--only vireo|qemu]
#
# The guest is TestGuests' mb-user with `ticks spin=S fill=F churn=C` in a 1 GiB VM: it fills F MiB
# (RAM - 64 MiB - C: nearly all of RAM holds data, so every migration moves ~1 GiB), then at every
# tick rewrites two words of each page of C MiB, after checking each still holds the previous
# tick's values ("user: churned page corrupt" if a migration lost a page), re-checks one MiB of
# the fill, and prints "user: tick K". The dirty rate is C MiB per tick: by default 16 MiB at a
# target of 4 ticks/s = 64 MiB/s; S is calibrated at the start for that rate (a short Vireo run of
# the same guest), and the tick rate each migration really saw is measured (from the times the
# tick lines appear, over 2 s before each migration) and printed with it, as is the rate during
# pre-copy (the migration competes with the vCPU for this machine's 2 cores).
#
# One guest per VMM boots once and then hops from process to process: every hop starts a fresh
# destination, migrates the running guest into it, and the destination is the next hop's source.
# Hops alternate between the configurations (so load drift hits them alike), --rounds of each
# (default 3; the table shows medians):
#   Vireo: `vireo run --incoming unix:PATH` and `--incoming tcp:127.0.0.1:0`, then
#          `PUT /vm/migrate {"destination": ..., "max_downtime_ms": 50}` on the source; its final
#          progress from its --status-file (the source exits once the destination runs the guest;
#          GET /vm/migration, polled every 5 ms meanwhile, is the fallback for builds before
#          1878837): elapsed_ms (total), downtime_ms (vCPUs stopped here -> the destination said
#          it runs them), rounds, ram_bytes_transferred, throttle_percent. Defaults otherwise: no
#          bandwidth limit, auto-converge on.
#   QEMU:  a second qemu-system-x86_64 with the same arguments plus `-incoming tcp:127.0.0.1:PORT`
#          (or unix:PATH); on the source QMP migrate-set-capabilities auto-converge=on and
#          migrate-set-parameters downtime-limit (50 ms, and QEMU's default 300 ms in the
#          "@300" column), max-bandwidth 100 GiB/s (Vireo has no limit; QEMU 7.2's default is
#          128 MiB/s, slower than the guest dirties), then `migrate` and query-migrate every 5 ms
#          until completed: total-time, downtime, setup-time, ram.transferred, dirty-sync-count,
#          cpu-throttle-percentage. QEMU's own downtime ends when the source has sent the last
#          of the state; the time from its STOP event (source) to the RESUME event (destination),
#          both stamped by the host clock, is the guest-visible pause and is printed too.
# Every hop is checked with the guest's own output: no "corrupt" line on either side, the
# destination's first tick follows the source's last one (+1, or +2 when the source stopped in the
# middle of a tick line) and did not start over, and it ticks 3 more times (the first of them
# re-checks every churned page). A failed, stuck (--timeout, 60 s) or unchecked migration is
# printed at the end with GET /vm/migration's last answer and both processes' stderr, and the
# script exits 1. About 3 minutes with the defaults on the 2-core development machine.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
vireo="" work="" pass=()
die() { echo "migration/run.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --vireo) vireo=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --rounds|--memory|--churn|--tick-hz|--spin|--fill|--downtime|--timeout|--only|--json|--rate-seconds)
            pass+=("$1" "$2"); shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
log() { echo "migration/run.sh: $*" >&2; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (scripts/setup.sh installs it)"
command -v python3 >/dev/null || die "python3 is missing"
if [ -z "$vireo" ]; then
    vireo=$repo/.build-bench/release/vireo
    if [ ! -x "$vireo" ]; then
        log "building a release vireo in .build-bench (minutes)"
        (cd "$repo" && swift build -c release -j 2 --scratch-path .build-bench --product vireo >&2)
    fi
fi
[ -x "$vireo" ] || die "no vireo at $vireo"
work=${work:-$(mktemp -d)}
mkdir -p "$work"
make -s -C "$repo/TestGuests" OUT="$work/guests" >&2
# shellcheck source=../vmm/qemu-cpu.sh
. "$repo/benchmarks/vmm/qemu-cpu.sh"
qemu_cpu_pick
log "QEMU: $(qemu-system-x86_64 --version | head -1); $QEMU_CPU_NOTE"
profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
[ -n "$profile" ] || die "vireo host-check printed no host profile"
log "Vireo: $vireo (sha256 $(sha256sum "$vireo" | cut -c1-12)); host profile $profile (passed to every run)"
log "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r); work files in $work"
exec python3 "$repo/benchmarks/migration/migrate.py" --vireo "$vireo" --guest "$work/guests/mb-user.elf" \
    --profile "$profile" --qemu-cpu "$QEMU_CPU" --work "$work" "${pass[@]}"
