#!/usr/bin/env bash
# Vireo vs QEMU (Debian's qemu-system-x86_64, -M microvm and -M pc, KVM) on the same guests in
# the same invocation, plus a minimal C VMM over /dev/kvm as the physical limit for PIO exits.
#
#   benchmarks/vmm/run.sh [--quick] [--runs N] [--pio-iters N] [--linux-timeout S]
#                         [--vireo PATH] [--guest-dir DIR] [--work DIR]
#
# Metrics (method and numbers in benchmarks/RESULTS.md):
#   1. process start -> first serial byte of mb-hello.elf (Multiboot), median/p90 of --runs
#      rounds that interleave the VMMs (default 20; quick 8)
#   2. peak RSS (wait4 ru_maxrss) minus guest RAM touched (Rss of the guest RAM mapping in
#      /proc/PID/smaps, sampled while mb-echo waits for input), at 64 MiB and 256 MiB
#   3. PIO exits/s: mb-user.elf iters=N (an `outb` loop at CPL3, long mode) minus iters=0, next to
#      kvm-pio-loop.c in the same mode (default N=100000, 2 rounds; quick 10000, 1 round)
#   4. Linux start -> "Linux version", "Run /init", "VIREO-INIT: started" (--linux-timeout per
#      VMM, default 300 s), and 4b: bzImage vs vmlinux of the same build; skipped with --quick or
#      when the guest from scripts/build-linux-guest.sh is missing
# Takes ~15 min in full mode, ~70 s with --quick, on the 2-core development machines. The vireo
# binary defaults to a release build in .build-bench (built here if missing; pass --vireo to use
# another). Scratch files (helpers, guests, logs) go to --work (default: a new temp dir).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
quick=0 runs="" pio_iters="" linux_timeout=300 vireo="" work=""
guest_dir=${VIREO_GUEST_DIR:-$HOME/.cache/vireo/guest}/current
die() { echo "run.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --runs) runs=$2; shift 2 ;;
        --pio-iters) pio_iters=$2; shift 2 ;;
        --linux-timeout) linux_timeout=$2; shift 2 ;;
        --vireo) vireo=$2; shift 2 ;;
        --guest-dir) guest_dir=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        -h|--help) sed -n "2,20s|^# \{0,1\}||p" "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if [ "$quick" = 1 ]; then runs=${runs:-8}; pio_iters=${pio_iters:-10000}; pio_runs=1; rss_runs=1
else runs=${runs:-20}; pio_iters=${pio_iters:-100000}; pio_runs=2; rss_runs=3; fi
case "$runs$pio_iters$linux_timeout" in *[!0-9]*) die "--runs, --pio-iters, --linux-timeout take integers" ;; esac

# The peer and the helpers' compiler come from Debian, installed here when missing (as
# scripts/build-linux-guest.sh does for its dependencies).
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "run.sh: installing ${missing[*]}" >&2
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
        die "could not install ${missing[*]} (run: apt-get install ${missing[*]})"
fi
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "no read/write access to /dev/kvm"
work=${work:-$(mktemp -d /tmp/vireo-bench.XXXXXX)}
mkdir -p "$work"
log() { echo "run.sh: $*" >&2; }
# The -cpu value QEMU can start with here (`host`, or `host,-arch-capabilities` where `-cpu host`
# aborts with "failed to set MSR 0x10a"); printed in the header.
# shellcheck source=qemu-cpu.sh
source "$repo/benchmarks/vmm/qemu-cpu.sh"
qemu_cpu_pick

# --- tools and guests ---------------------------------------------------------------------
if [ -z "$vireo" ]; then
    vireo=$repo/.build-bench/release/vireo
    if [ ! -x "$vireo" ]; then
        log "building a release vireo in .build-bench (minutes)"
        (cd "$repo" && swift build -c release --scratch-path .build-bench --product vireo >&2)
    fi
fi
[ -x "$vireo" ] || die "no vireo binary at $vireo"
cc -O2 -Wall -Wextra -o "$work/firstbyte" "$repo/benchmarks/vmm/firstbyte.c" -lm
cc -O2 -Wall -Wextra -o "$work/kvm-pio-loop" "$repo/benchmarks/vmm/kvm-pio-loop.c"
tg=$work/tg
make -s -C "$repo/TestGuests" OUT="$tg" "$tg/mb-hello.elf" "$tg/mb-echo.elf" "$tg/mb-user.elf" >&2
fb=$work/firstbyte

# VMM configurations: name -> command prefix taking "KERNEL MEM CMDLINE [INITRD]".
vmms=(vireo vireo-noprobe qemu-microvm qemu-pc)
vmm_cmd() { # name kernel mem cmdline [initrd] -> prints argv, one per line
    local name=$1 kernel=$2 mem=$3 cmdline=$4 initrd=${5:-}
    case "$name" in
        vireo|vireo-noprobe)
            printf '%s\n' "$vireo" run --kernel "$kernel" --memory "$mem" --cpus 1
            [ "$name" = vireo-noprobe ] && printf '%s\n' --host-profile emulated-kernel-mode
            [ -n "$cmdline" ] && printf '%s\n' --cmdline "$cmdline"
            [ -n "$initrd" ] && printf '%s\n' --initrd "$initrd" ;;
        qemu-microvm|qemu-pc)
            printf '%s\n' qemu-system-x86_64 -accel kvm -M "${name#qemu-}" -cpu "$QEMU_CPU" -m "$mem" -smp 1 \
                -nodefaults -no-user-config -display none -serial stdio \
                -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$kernel"
            [ -n "$cmdline" ] && printf '%s\n' -append "$cmdline"
            [ -n "$initrd" ] && printf '%s\n' -initrd "$initrd" ;;
    esac
    return 0
}
# fbrun NAME KERNEL MEM CMDLINE INITRD -- FIRSTBYTE-OPTIONS...: firstbyte's output on stdout.
fbrun() {
    local name=$1 kernel=$2 mem=$3 cmdline=$4 initrd=$5; shift 6
    local -a cmd; mapfile -t cmd < <(vmm_cmd "$name" "$kernel" "$mem" "$cmdline" "$initrd")
    "$fb" "$@" -- "${cmd[@]}"
}
field() { sed -e 's/ last=.*//' -e 's/^/ /' | sed -n "s/.* $1=\([^ ]*\).*/\1/p" | head -1; } # field KEY < "k=v k=v" line
# stats FILE -> "median p90 n" over the numbers in FILE (one per line; negatives ignored)
stats() { awk '$1 >= 0' "$1" | sort -g | awk '{v[NR]=$1} END {
    if (NR == 0) { print "- - 0"; exit }
    m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
    p = int(0.9 * NR); if (p < 0.9 * NR) p++; printf "%.1f %.1f %d\n", m, v[p], NR }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "-" }'; }

echo "# Vireo VMM benchmark  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host: $(uname -sr), $(nproc) CPUs, $(. /etc/os-release && echo "$PRETTY_NAME"), kvm modules: $(cd /sys/module && echo kvm*)"
echo "vireo: $vireo (built $(date -u -r "$vireo" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$vireo" | cut -c1-12); repo at $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$repo" && git diff --quiet HEAD 2>/dev/null || echo '+dirty'))"
echo "qemu: $(qemu-system-x86_64 --version | head -1); $QEMU_CPU_NOTE"
echo "mode: $([ "$quick" = 1 ] && echo quick || echo full), runs=$runs, pio iters=$pio_iters; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- 1. start -> first serial byte ---------------------------------------------------------
# Rounds interleave the VMMs so that load from other processes hits them alike.
log "1/4 first serial byte of mb-hello.elf, $runs rounds"
for name in "${vmms[@]}"; do : >"$work/first.$name"; : >"$work/status.$name"; done
for ((r = 1; r <= runs; r++)); do
    for name in "${vmms[@]}"; do
        line=$(fbrun "$name" "$tg/mb-hello.elf" 64M "" "" -- --kill-first --timeout 30 | grep '^run ')
        echo "$line" | field first_ms >>"$work/first.$name"
        echo "$line" | field status >>"$work/status.$name"
    done
done
echo "## 1. process start -> first serial byte (mb-hello.elf, 64 MiB, 1 vCPU; ms)"
printf '%-14s %9s %9s %4s  %s\n' vmm median p90 n "vs vireo (median)"
read -r v_med _ _ < <(stats "$work/first.vireo")
for name in "${vmms[@]}"; do
    read -r med p90 n < <(stats "$work/first.$name")
    note=""; [ "$n" = 0 ] && note="unsupported/failed: $(sort -u "$work/status.$name" | tr '\n' ' ')"
    printf '%-14s %9s %9s %4s  %s %s\n' "$name" "$med" "$p90" "$n" "$(ratio "$med" "$v_med")x" "$note"
done
echo

# --- 2. peak RSS minus guest RAM touched -----------------------------------------------------
log "2/4 peak RSS with mb-echo at 64 MiB and 256 MiB, $rss_runs run(s) each"
echo "## 2. peak RSS of the VMM process minus guest RAM touched (mb-echo.elf; KiB, medians)"
echo "guest = Rss of the mapping whose size equals guest RAM and anon/file = RssAnon/RssFile, all"
echo "sampled at 'echo: ready'; maxrss = wait4 ru_maxrss after 'q' ends the guest; overhead = maxrss - guest;"
echo "private = anon - guest (file-backed pages: binary and shared libraries, shared between VMs)"
printf '%-14s %6s %8s %7s %8s %8s %9s %8s  %s\n' vmm memory maxrss guest anon file overhead private "vireo/this (overhead, private)"
declare -A overhead private
for mem in 64 256; do
    for name in "${vmms[@]}"; do
        for k in maxrss_kb guest_rss_kb rss_anon_kb rss_file_kb; do : >"$work/$k"; done
        for ((r = 1; r <= rss_runs; r++)); do
            line=$(fbrun "$name" "$tg/mb-echo.elf" "${mem}M" "" "" -- --timeout 60 \
                   --sample-at "echo: ready" --guest-kb $((mem * 1024)) --send q | grep '^run ')
            [ "$(echo "$line" | field status)" = exit:1 ] || continue
            for k in maxrss_kb guest_rss_kb rss_anon_kb rss_file_kb; do
                echo "$line" | field $k >>"$work/$k"
            done
        done
        declare -A med=()
        for k in maxrss_kb guest_rss_kb rss_anon_kb rss_file_kb; do read -r med[$k] _ _ < <(stats "$work/$k"); done
        over=$(awk -v a="${med[maxrss_kb]}" -v b="${med[guest_rss_kb]}" 'BEGIN { if (a+0 > 0 && b != "-") printf "%d", a-b; else print "-" }')
        priv=$(awk -v a="${med[rss_anon_kb]}" -v b="${med[guest_rss_kb]}" 'BEGIN { if (a+0 > 0 && b != "-") printf "%d", a-b; else print "-" }')
        overhead[$name.$mem]=$over; private[$name.$mem]=$priv
        printf '%-14s %5sM %8s %7s %8s %8s %9s %8s  %s %s\n' "$name" "$mem" "${med[maxrss_kb]%.*}" \
            "${med[guest_rss_kb]%.*}" "${med[rss_anon_kb]%.*}" "${med[rss_file_kb]%.*}" "$over" "$priv" \
            "$(ratio "${overhead[vireo.$mem]}" "$over")" "$(ratio "${private[vireo.$mem]}" "$priv")"
    done
done
echo

# --- 3. PIO exits per second -----------------------------------------------------------------
# mb-user runs its loop at CPL3 in 64-bit long mode with paging (the only guest mode that runs
# natively on hosts that emulate guest kernel mode); kvm-pio-loop --mode long3 does the same.
log "3/4 PIO exits: mb-user iters=$pio_iters vs iters=0, and kvm-pio-loop, $pio_runs round(s)"
echo "## 3. PIO exits handled per second (outb loop at CPL3 in long mode, I/O bitmap + IOPL=3)"
pio_vmms=(vireo qemu-microvm qemu-pc)
loop_modes=(long3 long0 cpl0)
for name in "${pio_vmms[@]}"; do
    : >"$work/tN.$name"; : >"$work/t0.$name"; : >"$work/loop.$name"; : >"$work/pionote.$name"
done
for mode in "${loop_modes[@]}"; do : >"$work/kl.$mode"; done
for ((r = 1; r <= pio_runs; r++)); do
    for name in "${pio_vmms[@]}"; do
        for it in "$pio_iters" 0; do
            line=$(fbrun "$name" "$tg/mb-user.elf" 64M "iters=$it" "" -- --timeout 300 \
                   --marker "user: pio loop start" --marker "user: pio loop end" \
                   --stop-at "KVM internal error" | grep '^run ')
            if [ "$(echo "$line" | field status)" = exit:1 ] &&
               echo "$line" | grep -q "last=\"user: done $it iterations at cpl3\""; then
                echo "$line" | field end_ms >>"$work/$([ "$it" = 0 ] && echo t0 || echo tN).$name"
                [ "$it" = 0 ] || awk -v a="$(echo "$line" | field m0_ms)" -v b="$(echo "$line" | field m1_ms)" \
                    -v n="$it" 'BEGIN { if (a >= 0 && b > a) printf "%.3f\n", (b-a)*1000/n }' >>"$work/loop.$name"
            else
                echo "failed: $(echo "$line" | field status) last=$(echo "$line" | sed 's/.*last=//')" >"$work/pionote.$name"
            fi
        done
    done
    for mode in "${loop_modes[@]}"; do
        "$work/kvm-pio-loop" --mode "$mode" --iters "$pio_iters" | field us_per_exit >>"$work/kl.$mode" || true
    done
done
echo "us/exit (exit times) = (t(N) - t(0)) / N with t = process start -> exit; us/exit (loop) = time"
echo "between the guest's 'pio loop start' and 'pio loop end' lines / N (no boot jitter); exits/s from the latter"
printf '%-15s %9s %9s %8s %8s %9s  %s\n' vmm "t(N) ms" "t(0) ms" "us/exit" "(loop)" exits/s "vireo/this, note"
declare -A pio_rate
for name in "${pio_vmms[@]}"; do
    read -r tN _ _ < <(stats "$work/tN.$name"); read -r t0 _ _ < <(stats "$work/t0.$name")
    read -r loop _ _ < <(stats "$work/loop.$name")
    us=$(awk -v a="$tN" -v b="$t0" -v n="$pio_iters" 'BEGIN { if (a+0 > 0 && b+0 > 0 && a > b) printf "%.1f", (a-b)*1000/n; else print "-" }')
    pio_rate[$name]=$(awk -v u="$loop" 'BEGIN { if (u+0 > 0) printf "%.0f", 1e6/u; else print "-" }')
    printf '%-15s %9s %9s %8s %8s %9s  %s %s\n' "$name" "$tN" "$t0" "$us" "$loop" "${pio_rate[$name]}" \
        "$(ratio "${pio_rate[vireo]}" "${pio_rate[$name]}")" "$(cat "$work/pionote.$name")"
done
for mode in "${loop_modes[@]}"; do
    read -r us _ _ < <(stats "$work/kl.$mode")
    pio_rate[kvm-loop-$mode]=$(awk -v u="$us" 'BEGIN { if (u+0 > 0) printf "%.0f", 1e6/u; else print "-" }')
    case $mode in
        long3) what="minimal C VMM, same mode as mb-user: the physical limit" ;;
        long0) what="minimal C VMM, 64-bit CPL0 (loop emulated)" ;;
        cpl0) what="minimal C VMM, 32-bit CPL0, paging off (loop emulated)" ;;
    esac
    printf '%-15s %9s %9s %8s %8s %9s  %s %s\n' "kvm-loop-$mode" - - - "$us" "${pio_rate[kvm-loop-$mode]}" \
        "$(ratio "${pio_rate[vireo]}" "${pio_rate[kvm-loop-$mode]}")" "$what"
done
echo

# --- 4. Linux start -> init marker -----------------------------------------------------------
kernel=$guest_dir/bzImage vmlinux=$guest_dir/vmlinux initrd=$guest_dir/initramfs.cpio
if [ "$quick" = 1 ]; then
    echo "## 4. Linux: skipped (--quick)"; exit 0
fi
if [ ! -r "$kernel" ] || [ ! -r "$initrd" ]; then
    echo "## 4. Linux: skipped (no guest at $guest_dir; run scripts/build-linux-guest.sh)"; exit 0
fi
log "4/4 Linux boots, up to ${linux_timeout}s each"
# QEMU gets the flags Vireo's host profile adds, as Vireo prints them with -v.
flags=$("$vireo" run -v --kernel "$tg/mb-hello.elf" --memory 16M 2>&1 >/dev/null |
        sed -n 's/^vireo: guest flag \([^:]*\):.*/\1/p' | tr '\n' ' ' | sed 's/ $//' || true)
base="console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on"
markers=("Linux version" "Run /init" "VIREO-INIT: started" "VIREO-INIT: nproc=")
# Stop early where nothing more can happen: QEMU's emulation-failure report, a panic.
stops=(--stop-at "KVM internal error" --stop-at "end Kernel panic" --stop-at "emulator failed")
margs=(); for m in "${markers[@]}"; do margs+=(--marker "$m"); done
sec() { awk '{ if ($1 >= 0) printf "%.1f", $1/1000; else print "-" }'; }
echo "## 4. Linux start -> markers (1 vCPU, 512 MiB, bzImage + initramfs; seconds after process start)"
echo "guest: $(readlink -f "$guest_dir") ($(sed -n 's/^kernel_release=//p' "$guest_dir/build-info.txt" 2>/dev/null))"
echo "cmdline: $base vireo.reboot (vireo adds its host-profile flags itself; qemu gets them appended: $flags)"
printf '%-13s %8s %8s %8s %8s %8s %8s  %s\n' vmm "1st byte" "Linux v" "Run init" "INIT st" "nproc" "end" "status, last line"
declare -A init_s first_s linuxv_s
for name in vireo qemu-microvm qemu-pc; do
    cmdline="$base vireo.reboot"; [ "$name" = vireo ] || cmdline="$base $flags vireo.reboot"
    line=$(fbrun "$name" "$kernel" 512M "$cmdline" "$initrd" -- --timeout "$linux_timeout" "${margs[@]}" \
           "${stops[@]}" --log "$work/linux.$name.log" --stderr "$work/linux.$name.err" | grep '^run ')
    init_s[$name]=$(echo "$line" | field m2_ms | sec); first_s[$name]=$(echo "$line" | field first_ms | sec)
    linuxv_s[$name]=$(echo "$line" | field m0_ms | sec)
    printf '%-13s %8s %8s %8s %8s %8s %8s  %s %s\n' "$name" "${first_s[$name]}" \
        "${linuxv_s[$name]}" "$(echo "$line" | field m1_ms | sec)" "${init_s[$name]}" \
        "$(echo "$line" | field m3_ms | sec)" "$(echo "$line" | field end_ms | sec)" \
        "$(echo "$line" | field status)" "$(echo "$line" | sed 's/.*last=//')"
    grep -m1 "emulation failure\|emulator failed\|Suberror" "$work/linux.$name.err" 2>/dev/null |
        sed 's/^/    stderr: /' || true
    grep -m1 "^Code=" "$work/linux.$name.err" 2>/dev/null | sed 's/^/    stderr: /' | cut -c1-120 || true
done
echo "ratios (time, vireo/qemu; lower is better): first byte vs qemu-microvm" \
     "$(ratio "${first_s[vireo]}" "${first_s[qemu-microvm]}"), vs qemu-pc $(ratio "${first_s[vireo]}" "${first_s[qemu-pc]}");" \
     "VIREO-INIT: started vs qemu-pc $(ratio "${init_s[vireo]}" "${init_s[qemu-pc]}") ('-' where one never got there)"
echo
if [ -r "$vmlinux" ]; then
    # The console replays the log when ttyS0 registers, so "Linux version" arrives with the first
    # byte; both mark the end of in-guest decompression plus early boot.
    echo "## 4b. bzImage decompression on the host: same build as bzImage and as vmlinux (s)"
    printf '%-30s %8s %8s\n' "vmm, kernel" "1st byte" "Linux v"
    for name in vireo qemu-microvm; do
        for k in "$kernel" "$vmlinux"; do
            if [ "$name.$k" = "qemu-microvm.$kernel" ]; then
                # Measured in section 4 already (same kernel, flags and stop point); a QEMU bzImage
                # boot spends ~1.5-2 min decompressing in the guest, so it is not repeated.
                printf '%-30s %8s %8s\n' "qemu-microvm, bzImage (sec. 4)" "${first_s[qemu-microvm]}" "${linuxv_s[qemu-microvm]}"
                continue
            fi
            cmdline=$base; [ "$name" = vireo ] || cmdline="$base $flags"
            line=$(fbrun "$name" "$k" 512M "$cmdline" "$initrd" -- --timeout 200 --marker "Linux version" \
                   --stop-at "Linux version" "${stops[@]}" | grep '^run ')
            printf '%-30s %8s %8s\n' "$name, $(basename "$k")$([ "$name.$k" = "qemu-microvm.$vmlinux" ] && echo ' (PVH)')" \
                "$(echo "$line" | field first_ms | sec)" "$(echo "$line" | field m0_ms | sec)"
        done
    done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
