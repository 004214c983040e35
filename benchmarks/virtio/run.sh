#!/usr/bin/env bash
# virtio-blk: Vireo vs QEMU (Debian's qemu-system-x86_64 -M pc, KVM, virtio-blk-pci on an
# iothread) with the same guest, the same raw disk and the same request stream, in one run.
#
#   benchmarks/virtio/run.sh [--requests N] [--vireo PATH] [--work DIR]
#
# The guest is TestGuests' mb-virtio in bench mode: a minimal virtio 1.x driver that issues N
# 4 KiB requests one at a time (sequential/random, read/write) and polls the used ring. For each
# VMM and workload it reports wall time, requests/s, and host CPU time per request: of the whole
# process, and of everything but the vCPU threads ("vmm": the device work wherever it runs —
# Vireo's device thread; QEMU's iothread, main loop and thread-pool workers), read from
# /proc/PID/task/*/stat while the guest runs.
#
# On hosts whose KVM emulates guest kernel mode (shared/HOST-KVM.md) the guest's side of each
# request is emulated (and charged to the vCPU threads as system time) and dominates wall time
# for both VMMs alike; the non-vCPU CPU per request is the figure that compares the VMMs' data
# paths. Results: benchmarks/RESULTS.md.
# virtio-net (needs root: the TAP lives in a network namespace this script creates): the guest
# mb-virtio-net sends N full-size frames one at a time; the figure is again the host CPU per
# frame outside the vCPU threads (QEMU runs virtio-net transmit in its main loop when vhost is off). Guest-side TCP throughput, and the effect of
# checksum/TSO offloads, need a guest TCP stack driven from user space and are not measured here.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
requests=20000 vireo="" work=""
die() { echo "run.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --vireo) vireo=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        -h|--help) sed -n "2,17s|^# \{0,1\}||p" "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$requests" in ''|*[!0-9]*) die "--requests takes an integer" ;; esac

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v bc >/dev/null || missing+=(bc)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || die "cannot install ${missing[*]}"
fi
if [ -z "$vireo" ]; then
    echo "run.sh: building a release vireo in .build-bench (once)" >&2
    (cd "$repo" && swift build -c release -j 2 --scratch-path .build-bench --product vireo >&2) || die "release build failed"
    vireo=$repo/.build-bench/release/vireo
fi
[ -x "$vireo" ] || die "no vireo at $vireo"
work=${work:-$(mktemp -d)}
mkdir -p "$work"
make -s -C "$repo/TestGuests" OUT="$work/guests" >&2 || die "building the test guests failed"
guest=$work/guests/mb-virtio.elf
disk=$work/bench.img
rm -f "$disk"
truncate -s 256M "$disk"
# Allocated, so reads hit real blocks on both VMMs.
dd if=/dev/zero of="$disk" bs=1M count=256 conv=notrunc status=none

ticks=$(getconf CLK_TCK)
# CPU seconds (user+system) of process $1: "total vcpu", vcpu being the sum over its vCPU
# threads (Vireo names them vcpuN, QEMU "CPU N/KVM" with debug-threads=on).
process_cpu() {
    local pid=$1 task name total vcpu=0 value
    total=$(awk -v t="$ticks" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$pid/stat" 2>/dev/null) || return 1
    for task in /proc/"$pid"/task/*; do
        name=$(cat "$task/comm" 2>/dev/null) || continue
        case "$name" in vcpu[0-9]*|CPU\ */KVM)
            value=$(awk -v t="$ticks" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "$task/stat" 2>/dev/null) || continue
            vcpu=$(echo "$vcpu + $value" | bc -l) ;;
        esac
    done
    echo "$total $vcpu"
}

# Runs one VMM command line in the background, samples its CPU until it exits, prints
# "wall vmm_cpu process_cpu" (vmm_cpu = process minus vCPU threads).
measure() {
    local start end pid total=0 vcpu=0 sample sample_total sample_vcpu
    start=$(date +%s.%N)
    "$@" >"$work/out" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sample=$(process_cpu "$pid" || true)
        if [ -n "$sample" ]; then
            read -r sample_total sample_vcpu <<<"$sample"
            total=$sample_total
            # vCPU threads exit before the process does: keep the last sum seen with them alive.
            [ "$(echo "$sample_vcpu >= $vcpu" | bc -l)" = 1 ] && vcpu=$sample_vcpu
        fi
        sleep 0.05
    done
    wait "$pid" || true
    end=$(date +%s.%N)
    grep -q "bench done" "$work/out" || { cat "$work/out" >&2; die "the guest did not finish under: $*"; }
    echo "$(echo "$end - $start" | bc -l) $(echo "$total - $vcpu" | bc -l) $total"
}

run_vireo() {
    measure "$vireo" run --kernel "$guest" --memory 64M --cmdline "bench=$requests $1" --disk "path=$disk,format=raw"
}
run_qemu() {
    measure qemu-system-x86_64 -enable-kvm -M pc -m 64M -name bench,debug-threads=on -nodefaults -display none -serial stdio \
        -kernel "$guest" -append "bench=$requests $1" -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -object iothread,id=io0 -drive "file=$disk,if=none,id=d0,format=raw,cache=writeback,aio=threads" \
        -device virtio-blk-pci,drive=d0,iothread=io0,disable-legacy=on
}

# Runs "$2 ARGS" for vireo and qemu ($2 is run_ or run_net_), prints a row each and the ratio.
compare() {
    local name=$1 runner=$2 unit=$3; shift 3
    local wall device total rate vireo_us=0 qemu_us=0 us
    for vmm in vireo qemu; do
        read -r wall device total < <("$runner$vmm" "$@")
        rate=$(echo "$requests / $wall" | bc -l)
        us=$(echo "$device * 1000000 / $requests" | bc -l)
        [ "$vmm" = vireo ] && vireo_us=$us || qemu_us=$us
        printf '%-12s %-6s %8.2f %10.0f %16.1f %16.1f\n' "$name" "$vmm" "$wall" "$rate" "$us" \
            "$(echo "$total * 1000000 / $requests" | bc -l)"
    done
    if [ "$(echo "$qemu_us > 0" | bc -l)" = 1 ]; then
        printf '%-12s ratio  non-vCPU CPU per %s, Vireo/QEMU: %.2f\n' "$name" "$unit" "$(echo "$vireo_us / $qemu_us" | bc -l)"
    fi
}

printf '%-12s %-6s %8s %10s %16s %16s\n' workload vmm wall_s req_per_s vmm_us_per_req process_us_per_req
compare "seq read" run_ request ""
compare "rand read" run_ request "rand"
compare "seq write" run_ request "write"
compare "rand write" run_ request "rand write"

# virtio-net transmit.
if [ "$(id -u)" -ne 0 ]; then
    echo "virtio-net: skipped (needs root for the network namespace and TAP)"
    exit 0
fi
ns=vireo-bench-$$
trap 'ip netns del "$ns" 2>/dev/null' EXIT
ip netns add "$ns"
ip netns exec "$ns" ip tuntap add vtap0 mode tap
ip netns exec "$ns" ip link set vtap0 up
net_guest=$work/guests/mb-virtio-net.elf
run_net_vireo() {
    measure ip netns exec "$ns" "$vireo" run --kernel "$net_guest" --memory 64M --cmdline "bench=$requests" \
        --net tap=vtap0
}
run_net_qemu() {
    measure ip netns exec "$ns" qemu-system-x86_64 -enable-kvm -M pc -m 64M -name bench,debug-threads=on \
        -nodefaults -display none -serial stdio -kernel "$net_guest" -append "bench=$requests" \
        -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -netdev tap,id=n0,ifname=vtap0,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,disable-legacy=on
}
compare "net tx 1514" run_net_ frame
