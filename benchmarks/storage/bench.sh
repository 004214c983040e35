#!/bin/bash
# Storage benchmark: `vireo img bench` / `vireo img convert` against `qemu-img bench` / `qemu-img convert`
# on the same files, same access pattern. Prints seconds and the vireo/qemu ratio (lower is better).
# Usage: benchmarks/storage/bench.sh [workdir]   (VIREO_BIN: vireo binary, default .build/release/vireo)
# Needs ~7 GiB free (sparse files) and qemu-utils (scripts/setup-storage.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$root/.build/release/vireo}
work=${1:-$(mktemp -d /tmp/vireo-bench.XXXXXX)}
mkdir -p "$work"
[ -x "$vireo" ] || { echo "vireo binary not found at $vireo (swift build -c release, or set VIREO_BIN)" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "qemu-img missing: run scripts/setup-storage.sh" >&2; exit 1; }

requests=${REQUESTS:-100000}
prime_step=$((4096 * 7919))   # strided "random" pattern both tools can express (offsets wrap at the end)

seconds_of() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
wall() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
report() { printf '%-34s vireo %8.3f s   qemu-img %8.3f s   ratio %5.2f\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"; }

echo "# $(date -u +%F) $(nproc) cores, $(. /etc/os-release; echo "$PRETTY_NAME"), $(qemu-img --version | head -1)"
echo "# work dir $work; requests per bench run: $requests; both tools synchronous (-d 1), page cache (-t writeback)"

# Dense 1 GiB source: random data, so reads hit real clusters.
head -c $((1 << 30)) /dev/urandom > "$work/dense.raw"
qemu-img convert -O qcow2 "$work/dense.raw" "$work/dense.qcow2"
cat "$work/dense.qcow2" > /dev/null   # warm the page cache for both tools

for pattern in "sequential:4096" "random:$prime_step"; do
    name=${pattern%%:*}; step=${pattern##*:}
    v=$("$vireo" img bench -c "$requests" -s 4096 -S "$step" -f qcow2 "$work/dense.qcow2" | seconds_of)
    q=$(qemu-img bench -c "$requests" -s 4096 -S "$step" -d 1 -t writeback -f qcow2 "$work/dense.qcow2" | seconds_of)
    report "4K $name read" "$v" "$q"
    for tool in vireo qemu; do qemu-img create -q -f qcow2 "$work/write-$tool.qcow2" 1G; done
    v=$("$vireo" img bench -w -c "$requests" -s 4096 -S "$step" -f qcow2 "$work/write-vireo.qcow2" | seconds_of)
    q=$(qemu-img bench -w -c "$requests" -s 4096 -S "$step" -d 1 -t writeback -f qcow2 "$work/write-qemu.qcow2" | seconds_of)
    report "4K $name write (allocating)" "$v" "$q"
    v=$("$vireo" img bench -w -c "$requests" -s 4096 -S "$step" -f qcow2 "$work/write-vireo.qcow2" | seconds_of)
    q=$(qemu-img bench -w -c "$requests" -s 4096 -S "$step" -d 1 -t writeback -f qcow2 "$work/write-qemu.qcow2" | seconds_of)
    report "4K $name rewrite (allocated)" "$v" "$q"
done

# Reference only: qemu-img bench at its default queue depth (64 requests in flight through its thread pool).
for pattern in "sequential:4096" "random:$prime_step"; do
    name=${pattern%%:*}; step=${pattern##*:}
    q=$(qemu-img bench -c "$requests" -s 4096 -S "$step" -t writeback -f qcow2 "$work/dense.qcow2" | seconds_of)
    printf '%-34s qemu-img -d 64 %8.3f s\n' "4K $name read (reference)" "$q"
done

# Sparse 4 GiB source: 64 scattered 4 MiB extents of data (256 MiB), the rest holes.
truncate -s 4G "$work/sparse.raw"
for i in $(seq 0 63); do
    dd if="$work/dense.raw" of="$work/sparse.raw" bs=4M count=1 skip=$((i % 256)) seek=$((i * 16)) conv=notrunc status=none
done

# Same durability: vireo img convert fsyncs its output before it exits; qemu-img convert's
# default destination cache mode is "unsafe" (no flush at all), so it gets -t writeback (a flush
# at the end). Its unsafe default is shown beside for reference.
for source in sparse dense; do
    rm -f "$work/out-v.qcow2" "$work/out-q.qcow2"
    v=$(wall "$vireo" img convert -f raw -O qcow2 "$work/$source.raw" "$work/out-v.qcow2")
    q=$(wall qemu-img convert -t writeback -f raw -O qcow2 "$work/$source.raw" "$work/out-q.qcow2")
    report "convert $source raw -> qcow2" "$v" "$q"
    rm -f "$work/out-u.qcow2"
    u=$(wall qemu-img convert -f raw -O qcow2 "$work/$source.raw" "$work/out-u.qcow2")
    printf '%-34s qemu-img -t unsafe (its default, no flush) %8.3f s\n' "convert $source raw -> qcow2" "$u"
    rm -f "$work/out-u.qcow2"
    qemu-img compare -q "$work/out-v.qcow2" "$work/out-q.qcow2" || echo "  MISMATCH between outputs" >&2
done
rm -f "$work/out-v.qcow2" "$work/out-q.qcow2"
v=$(wall "$vireo" img convert -f qcow2 -O raw "$work/dense.qcow2" "$work/out-v.raw")
q=$(wall qemu-img convert -t writeback -f qcow2 -O raw "$work/dense.qcow2" "$work/out-q.raw")
report "convert dense qcow2 -> raw" "$v" "$q"
rm -f "$work"/*.raw "$work"/*.qcow2
