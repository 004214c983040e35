#!/bin/sh
# Builds the Storage sources with the fuzz entry point under libFuzzer + ASan and runs it.
# Usage: Fuzz/QCOW2Header/run.sh [seconds]   (seed corpus: qemu-img made images in a temp dir)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_OUT:-/tmp/vireo-fuzz-qcow2}
mkdir -p "$out/corpus"
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name StorageFuzz \
    "$root"/Sources/Storage/*.swift "$root/Fuzz/QCOW2Header/FuzzEntry.swift" -o "$out/fuzz-qcow2"
if command -v qemu-img >/dev/null; then
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$out/corpus/v3.qcow2" 1M
    qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=512 "$out/corpus/v2.qcow2" 1M
    qemu-img create -q -f qcow2 -o cluster_size=16384,extended_l2=on "$out/corpus/ext.qcow2" 1M
fi
"$out/fuzz-qcow2" -max_total_time="${1:-60}" -max_len=65536 -rss_limit_mb=1024 "$out/corpus"
