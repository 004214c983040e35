#!/usr/bin/env bash
# Linux boot time, Vireo vs QEMU, on a KVM with real semantics: inside the nested test host's L1
# (scripts/nested-host.sh, QEMU TCG emulating AMD SVM + NPT). Our development hosts' own KVM
# emulates guest kernel mode (shared/HOST-KVM.md), so a Linux boot comparison there says little.
#
#   benchmarks/vmm/nested-boot.sh [--runs N] [--boot-timeout S] [--budget S] [--vireo PATH]
#                                 [--share DIR] [--out FILE]
#
# Guest: Debian's stock kernel (xz bzImage) + the busybox initramfs of scripts/build-debian-guest.sh,
# 2 vCPUs, 512 MiB, one command line for every VMM. Measured: process start -> the guest's first
# user-space line ("VIREO-DEBIAN: user space up"; `vireo.firstline` powers off right after it), in
# N rounds (default 3) that interleave, in rotating order:
#   vireo-cold    vireo run, host profile auto, bzImage payload cache empty (host decompresses xz)
#   vireo-warm    the same with the payload cache filled by an earlier boot
#   qemu-pc       qemu-system-x86_64 -accel kvm -M pc, -cpu host (or host,-arch-capabilities)
#   qemu-microvm  the same with -M microvm
# QEMU gets exactly the command line Vireo's -v reports it gave the guest. Then, to see where the
# time goes: the kernel's printk timestamps of phase lines (medians over the runs), the largest
# gaps between console lines of one boot per VMM, Vireo's own -v notes, and for one more boot
# per VMM the KVM exit counters (L1's debugfs, per VM) and Vireo's /vm/stats, read when the
# first user-space line appears.
# All of it runs in one L1 session: --budget (default 300 s) stops starting new rounds, each boot
# is killed after --boot-timeout (default 150 s), and L1 itself after their sum plus a margin.
# One round takes ~2.5-3 min on a 2-core development machine (boots 30-50 s each under TCG, more
# with other load); the defaults end within ~10 min. Seen twice in four sessions (2026-12-06):
# L1 itself wedged mid-run (soft lockups on both vCPUs) and the run ended at the L1 limit without
# a report; the logs in --share DIR still hold the boots done. The report goes to stdout (and
# --out FILE); the run's logs stay in --share DIR when given (else a temporary directory).
# vireo defaults to .build/release/vireo when it exists and is newer than .build/debug/vireo.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() { echo "nested-boot: error: $*" >&2; exit 1; }
log() { echo "nested-boot: $*" >&2; }

runs=3 boot_timeout=150 budget=300 vireo="" share="" out="" inner=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --boot-timeout) boot_timeout=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --vireo) vireo=$2; shift 2 ;;
        --share) share=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --inner) inner=1; shift ;;   # internal: the part that runs inside L1
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$runs$boot_timeout$budget" in *[!0-9]*|"") die "--runs, --boot-timeout, --budget take integers" ;; esac
[ "$runs" -ge 1 ] || die "--runs must be at least 1"

# ================================ on the host ================================================
if [ "$inner" = 0 ]; then
    command -v cc >/dev/null || die "cc is missing (apt-get install build-essential)"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    if [ -z "$vireo" ]; then
        vireo=$repo/.build/debug/vireo
        [ -x "$repo/.build/release/vireo" ] && [ "$repo/.build/release/vireo" -nt "$vireo" ] && vireo=$repo/.build/release/vireo
    fi
    [ -x "$vireo" ] || die "no vireo binary at $vireo (swift build first, or pass --vireo)"
    if [ -z "$share" ]; then
        share=$(mktemp -d /tmp/vireo-nested-boot.XXXXXX)
        trap 'rm -rf "$share"' EXIT
    fi
    mkdir -p "$share"; share=$(cd "$share" && pwd)
    # A snapshot of the binary: another build may replace it while L1 runs.
    cp "$vireo" "$share/vireo"
    cc -O2 -Wall -Wextra -o "$share/firstbyte" "$repo/benchmarks/vmm/firstbyte.c" -lm
    guest=$("$repo/scripts/build-debian-guest.sh")
    kernel=$(sed -n 's/^VIREO_DEBIAN_KERNEL=//p' <<<"$guest")
    initrd=$(sed -n 's/^VIREO_DEBIAN_INITRAMFS=//p' <<<"$guest")
    release=$(sed -n 's/^VIREO_DEBIAN_RELEASE=//p' <<<"$guest")
    [ -r "$kernel" ] && [ -r "$initrd" ] || die "build-debian-guest.sh gave no kernel/initramfs"
    {
        echo "vireo_src=$(printf %q "$vireo")"
        echo "vireo_built=$(printf %q "$(date -u -r "$vireo" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$vireo" | cut -c1-12)")"
        echo "repo_rev=$(printf %q "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo '+dirty')")"
        echo "kernel=$(printf %q "$kernel")"; echo "initrd=$(printf %q "$initrd")"; echo "release=$(printf %q "$release")"
        echo "host_load_start=$(printf %q "$(cut -d' ' -f1-3 /proc/loadavg)")"
        echo "host_desc=$(printf %q "$(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')")"
    } >"$share/params"
    # L1's limit: the round budget, one round in flight, the per-VMM counter boots, and L1's boot.
    l1_timeout=$((budget + 4 * boot_timeout + 3 * boot_timeout + 240))
    log "$(basename "$vireo") from $vireo; $runs rounds; L1 limit ${l1_timeout}s; host load $(cut -d' ' -f1-3 /proc/loadavg)"
    set +e
    (cd "$repo" && "$repo/scripts/nested-host.sh" --share "$share" --timeout "$l1_timeout" -- \
        bash "$repo/benchmarks/vmm/nested-boot.sh" --inner --runs "$runs" --boot-timeout "$boot_timeout" \
        --budget "$budget") >&2
    status=$?
    set -e
    [ -s "$share/report.txt" ] || die "L1 ended (status $status) without a report; logs in $share"
    echo "host load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$share/report.txt"
    cat "$share/report.txt"
    [ -n "$out" ] && cp "$share/report.txt" "$out"
    exit "$status"
fi

# ================================ inside L1 ==================================================
[ -n "${VIREO_NESTED_SHARE:-}" ] && [ -r "$VIREO_NESTED_SHARE/params" ] || die "--inner runs inside scripts/nested-host.sh only"
share=$VIREO_NESTED_SHARE
# shellcheck disable=SC1091
source "$share/params"
# shellcheck source=qemu-cpu.sh
source "$repo/benchmarks/vmm/qemu-cpu.sh"
started=$(date +%s)
w=/tmp/nested-boot; rm -rf "$w"; mkdir -p "$w"
logs=$share/logs; mkdir -p "$logs"
report=$share/report.txt; : >"$report"
say() { echo "$*" >>"$report"; }
# Everything the boots read lives in L1's RAM (tmpfs), so 9p reads are out of every measurement.
cp "$share/vireo" "$share/firstbyte" "$w/"
cp "$kernel" "$w/vmlinuz"; cp "$initrd" "$w/initramfs.cpio"
vireo_bin=$w/vireo fb=$w/firstbyte kernel=$w/vmlinuz initrd=$w/initramfs.cpio
"$vireo_bin" --version >/dev/null 2>&1 || true; qemu-system-x86_64 --version >/dev/null   # load the libraries once
qemu_cpu_pick
host_check=$("$vireo_bin" host-check 2>&1 || true)
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true

base="console=ttyS0 panic=-1 vireo.firstline"
marker="VIREO-DEBIAN: user space up"
vmms=(vireo-cold vireo-warm qemu-pc qemu-microvm)
cmdline=""      # Vireo's effective guest command line, from the first vireo boot's -v notes
vmm_cmd() { # name cmdline -> argv, one per line
    case "$1" in
        vireo-*)
            printf '%s\n' "$vireo_bin" run -v --kernel "$kernel" --initrd "$initrd" --cpus 2 --memory 512M --cmdline "$2" ;;
        qemu-*)
            printf '%s\n' qemu-system-x86_64 -accel kvm -M "${1#qemu-}" -cpu "$QEMU_CPU" -smp 2 -m 512M \
                -nodefaults -no-user-config -display none -serial stdio -no-reboot \
                -kernel "$kernel" -initrd "$initrd" -append "$2" ;;
    esac
}
cache_dir() { # name -> VIREO_CACHE_DIR for it (cold: emptied first)
    case "$1" in
        vireo-cold) rm -rf "$w/cache"; echo "$w/cache" ;;
        *) echo "$w/cache" ;;
    esac
}
field() { sed -e 's/ last=.*//' -e 's/^/ /' | sed -n "s/.* $1=\([^ ]*\).*/\1/p" | head -1; }
# stats FILE -> "median min max n" (seconds, 2 decimals) over the non-negative numbers in FILE
stats() { awk '$1 >= 0' "$1" | sort -g | awk '{v[NR]=$1} END {
    if (NR == 0) { print "- - - 0"; exit }
    m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
    printf "%.2f %.2f %.2f %d\n", m, v[1], v[NR], NR }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "-" }'; }
# printk time of the first console line containing TEXT in a log, or -1
ptime() { grep -a -m1 -F "$2" "$1" 2>/dev/null | sed -n 's/^[^[]*\[ *\([0-9.]*\)\].*/\1/p' | grep . || echo -1; }

# --- the timed rounds --------------------------------------------------------------------------
for name in "${vmms[@]}"; do : >"$w/t.$name"; : >"$w/st.$name"; done
rounds_done=0
for ((r = 1; r <= runs; r++)); do
    if [ $r -gt 1 ] && [ $(( $(date +%s) - started )) -ge "$budget" ]; then
        echo "nested-boot: budget of ${budget}s spent after $rounds_done rounds; no more rounds"; break
    fi
    k=$(( (r - 1) % ${#vmms[@]} )); order=("${vmms[@]:$k}" "${vmms[@]:0:$k}")
    for name in "${order[@]}"; do
        cl=$base; [[ $name == qemu-* ]] && cl=${cmdline:-$base}
        mapfile -t cmd <<<"$(vmm_cmd "$name" "$cl")"
        line=$(VIREO_CACHE_DIR=$(cache_dir "$name") "$fb" --timeout "$boot_timeout" \
               --marker "Linux version" --marker "Run /init" --marker "$marker" \
               --stop-at "$marker" --stop-at "end Kernel panic" --stop-at "KVM internal error" \
               --log "$logs/$name.$r.log" --stderr "$logs/$name.$r.err" -- "${cmd[@]}" | grep '^run ')
        t=$(echo "$line" | field m2_ms)
        awk -v t="$t" 'BEGIN { printf "%.3f\n", (t >= 0 ? t / 1000 : -1) }' >>"$w/t.$name"
        echo "$(echo "$line" | field status)" >>"$w/st.$name"
        echo "nested-boot: round $r $name: $(awk -v t="$t" 'BEGIN { if (t >= 0) printf "%.2f s", t/1000; else print "no user-space line" }') ($(echo "$line" | field status))"
        if [ -z "$cmdline" ] && [[ $name == vireo-cold || $name == vireo-warm ]]; then
            cmdline=$(sed -n 's/^vireo: guest command line: //p' "$logs/$name.$r.err" | head -1)
        fi
    done
    rounds_done=$r
done

# --- one more boot per VMM, held at the first user-space line: KVM's exit counters ------------
# Without vireo.firstline the guest goes on (loads two modules, waits 10 s for a disk), so the
# counters can be read while the VM exists; they include a few ms of work after the line.
counters=(exits io_exits mmio_exits halt_exits irq_exits irq_window_exits request_irq_exits
          signal_exits insn_emulation hypercalls irq_injections halt_wakeup)
profile_boot() { # name -> prints "counter=value ..." lines
    local name=$1 cl=${cmdline:-$base} pid d i sock=$w/api.sock
    cl=${cl/ vireo.firstline/}
    mapfile -t cmd <<<"$(vmm_cmd "$name" "$cl")"
    [[ $name == vireo-* ]] && cmd+=(--api-socket "$sock")
    rm -f "$sock" "$w/out.fifo" "$w/err.fifo"; mkfifo "$w/out.fifo" "$w/err.fifo"
    stamp "$(( ${EPOCHREALTIME/./} ))" <"$w/out.fifo" >"$logs/$name.counters.log" &
    stamp "$(( ${EPOCHREALTIME/./} ))" <"$w/err.fifo" >"$logs/$name.counters.err" &
    VIREO_CACHE_DIR=$w/cache "${cmd[@]}" >"$w/out.fifo" 2>"$w/err.fifo" </dev/null &
    pid=$!
    local deadline=$((SECONDS + boot_timeout))
    while [ $SECONDS -lt $deadline ]; do
        grep -q -F "$marker" "$logs/$name.counters.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if grep -q -F "$marker" "$logs/$name.counters.log"; then
        d=$(ls -d /sys/kernel/debug/kvm/"$pid"-* 2>/dev/null | head -1 || true)
        # utime and stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised name)
        echo "process CPU so far: $(sed 's/.*) //' "/proc/$pid/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "user %.1f s, system %.1f s", $12 / hz, $13 / hz }')"
        if [ -n "$d" ]; then
            for c in "${counters[@]}"; do [ -r "$d/$c" ] && printf '%s=%s ' "$c" "$(cat "$d/$c")"; done; echo
        else
            echo "(no /sys/kernel/debug/kvm/$pid-* in L1: debugfs not mounted?)"
        fi
        if [[ $name == vireo-* ]]; then
            curl -s --max-time 10 --unix-socket "$sock" http://vm/vm/stats >"$logs/$name.stats.json" || true
            echo "vireo /vm/stats: $(python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))
print("exits=%s cpu_user=%.1fs cpu_system=%.1fs rss=%dMiB; top reasons: %s" % (s["exits"], s["cpu_user_seconds"], s["cpu_system_seconds"], s["rss_bytes"] >> 20,
      ", ".join("%s=%d" % (r["reason"], r["count"]) for r in s.get("exit_reasons", [])[:12])))' "$logs/$name.stats.json" 2>&1 || echo unavailable)"
        fi
    else
        echo "(never reached the first user-space line)"
    fi
    kill "$pid" 2>/dev/null; sleep 0.5; kill -9 "$pid" 2>/dev/null; wait 2>/dev/null || true
}
stamp() { # T0_US: prefixes each line with the seconds since T0 (bash's clock: no process per line)
    local line now
    while IFS= read -r line; do now=${EPOCHREALTIME/./}; printf '%8.3f %s\n' "$(( (now - $1) / 1000 ))e-3" "$line"; done
}
declare -A exits
for name in vireo-warm qemu-pc qemu-microvm; do
    echo "nested-boot: counter boot $name"
    exits[$name]=$(profile_boot "$name")
done

# --- the report ----------------------------------------------------------------------------------
say "## Debian stock kernel, start -> first user-space line, inside the nested L1 ($(date -u '+%Y-%m-%d %H:%M UTC'))"
say "command: benchmarks/vmm/nested-boot.sh --runs $runs   (rounds done: $rounds_done)"
say "host: $host_desc; load average at start $host_load_start"
say "L1: kernel $(uname -r) under QEMU TCG, $(nproc) vCPUs, $(free -m | awk '/^Mem:/ { print $2 }') MiB; L1 uptime/load at report: $(uptime)"
say "vireo: $vireo_src ($vireo_built; repo $repo_rev)"
say "qemu: $(qemu-system-x86_64 --version | head -1); $QEMU_CPU_NOTE"
say "guest: $release, $(basename "$kernel") $(stat -c %s "$kernel") bytes (xz bzImage) + busybox initramfs $(stat -c %s "$initrd") bytes; 2 vCPUs, 512 MiB"
say "vireo host-check in L1: $(echo "$host_check" | tr '\n' ' ' | sed 's/  */ /g')"
say "command line given to vireo: $base"
say "guest command line (vireo -v, auto profile; QEMU got exactly this): ${cmdline:-'(not found; QEMU got the base line)'}"
say ""
say "seconds from process start to '$marker' (median / min / max over the rounds)"
say "$(printf '%-13s %7s %7s %7s %3s  %s' vmm median min max n 'statuses')"
declare -A med
for name in "${vmms[@]}"; do
    read -r m lo hi n <<<"$(stats "$w/t.$name")"; med[$name]=$m
    picks=""
    [[ $name == vireo-* ]] && picks="; host profile picked: $(cat "$logs/$name".*.err 2>/dev/null | sed -n 's/^vireo: host profile: \([a-z-]*\).*/\1/p' | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')"
    say "$(printf '%-13s %7s %7s %7s %3s  %s' "$name" "$m" "$lo" "$hi" "$n" "$(sort "$w/st.$name" | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')$picks")"
done
say "ratio vireo/qemu (medians; < 1: Vireo faster):"
for q in qemu-pc qemu-microvm; do
    say "  vs $q: cold $(ratio "${med[vireo-cold]}" "${med[$q]}"), warm $(ratio "${med[vireo-warm]}" "${med[$q]}")"
done
say ""
say "where the time goes: printk seconds of phase lines (median over the rounds); 'guest uptime' is"
say "what init printed; 'outside the kernel clock' = wall time - guest uptime (VMM start, loading, decompression)"
phases=("Linux version" "smp: Brought up" "clocksource: Switched to clocksource" "Trying to unpack rootfs" "Freeing unused kernel image" "Run /init")
say "$(printf '%-38s' phase; for name in "${vmms[@]}"; do printf ' %12s' "$name"; done)"
for ph in "${phases[@]}" "guest uptime" "wall (marker)" "outside the kernel clock"; do
    row=$(printf '%-38s' "$ph")
    for name in "${vmms[@]}"; do
        : >"$w/ph"
        for ((r = 1; r <= rounds_done; r++)); do
            lf=$logs/$name.$r.log
            up=$(grep -a -m1 -F "$marker" "$lf" 2>/dev/null | sed -n 's/.*uptime \([0-9.]*\) s.*/\1/p' || true); up=${up:--1}
            wall=$(sed -n "${r}p" "$w/t.$name")
            case "$ph" in
                "guest uptime") echo "$up" ;;
                "wall (marker)") echo "$wall" ;;
                "outside the kernel clock") awk -v a="$wall" -v b="$up" 'BEGIN { print ((a >= 0 && b >= 0) ? a - b : -1) }' ;;
                *) ptime "$lf" "$ph" ;;
            esac >>"$w/ph"
        done
        read -r m _ _ _ <<<"$(stats "$w/ph")"; row+=$(printf ' %12s' "$m")
    done
    say "$row"
done
say ""
say "largest gaps between consecutive printk lines, last round's boot per VMM (seconds, the line after the gap)"
for name in vireo-warm qemu-pc qemu-microvm; do
    lf=$logs/$name.$rounds_done.log
    say "  $name:"
    sed -n 's/^[^[]*\[ *\([0-9]*\.[0-9]*\)\] \(.*\)/\1 \2/p' "$lf" 2>/dev/null | tr -d '\r' |
        awk 'NR > 1 { printf "%.3f %s %s\n", $1 - prev, $1, substr($0, index($0, " ") + 1) } { prev = $1 }' |
        sort -rg | head -6 | awk '{ t = $1; at = $2; $1 = ""; $2 = ""; printf "    +%6.2f s  at %8s: %s\n", t, at, substr($0, 3, 90) }' >>"$report" || true
done
say ""
say "vireo's own -v notes (round 1 cold, then warm):"
for name in vireo-cold vireo-warm; do
    pattern="host profile\|bzImage payload"; [ $name = vireo-cold ] && pattern+="\|guest flag"
    grep -h "$pattern" "$logs/$name.1.err" 2>/dev/null | sed "s/^/  $name: /" >>"$report" || true
done
say ""
say "timeline of the counter boots (seconds after process start: vireo's -v notes, then console lines)"
for name in vireo-warm qemu-pc qemu-microvm; do
    say "  $name:"
    grep -v "guest flag\|pci " "$logs/$name.counters.err" 2>/dev/null | head -20 | cut -c1-150 | sed 's/^/    /' >>"$report" || true
    for text in "Linux version" "printk: console \[ttyS0\] enabled" "smp: Brought up" "Run /init" "$marker"; do
        grep -a -m1 "$text" "$logs/$name.counters.log" 2>/dev/null | tr -d '\r' | cut -c1-110 | sed 's/^/    /' >>"$report" || true
    done
done
say ""
say "KVM exit counters in L1 (debugfs, per VM, summed over vCPUs) at the first user-space line, one more boot each:"
for name in vireo-warm qemu-pc qemu-microvm; do say "  $name: $(sed '2,$s/^/    /' <<<"${exits[$name]}")"; done
say "L1 ran $(( $(date +%s) - started )) s for this script"
echo "nested-boot: report written ($(wc -l <"$report") lines)"
