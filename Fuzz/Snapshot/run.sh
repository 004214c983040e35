#!/bin/sh
# Builds the SnapshotFuzz target (VMM and below) under libFuzzer + ASan and runs it on the
# snapshot reader: SnapshotFile.parse plus the restore checks that need no /dev/kvm.
# Usage: Fuzz/Snapshot/run.sh [seconds]   (seed corpus: written by the binary, --write-seed)
# Own scratch path, so the normal .build is never rebuilt with sanitizers.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_OUT:-/tmp/vireo-fuzz-snapshot}
scratch=${FUZZ_SCRATCH:-$root/.build-fuzz}
mkdir -p "$out/corpus"
# SwiftPM's --sanitize fuzzer gives the fuzzer's main (no @main, no main symbol renaming); the
# driver keeps only the last -sanitize flag, so both sanitizers go in one -Xswiftc flag after it.
swift build -j 2 -c release --scratch-path "$scratch" --product SnapshotFuzz --sanitize fuzzer \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DVIREO_LIBFUZZER
bin=$(swift build -c release --scratch-path "$scratch" --sanitize fuzzer --show-bin-path)/SnapshotFuzz
cp "$bin" "$out/fuzz-snapshot"
"$out/fuzz-snapshot" --write-seed="$out/corpus"
# The seeds are about 72 KiB (mostly the PCI functions' 4 KiB config spaces as JSON arrays).
"$out/fuzz-snapshot" -max_total_time="${1:-60}" -max_len=131072 -rss_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus"
