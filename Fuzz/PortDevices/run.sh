#!/bin/sh
# Builds the Devices sources with the port-device fuzz entry point under libFuzzer + ASan and
# runs it. Usage: Fuzz/PortDevices/run.sh [seconds]. Prints libFuzzer's stats (execs, coverage);
# a crash leaves its input in $FUZZ_OUT (default /tmp/vireo-fuzz-ports).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_OUT:-/tmp/vireo-fuzz-ports}
mkdir -p "$out/corpus"
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name DevicesFuzz \
    $(find "$root/Sources/Devices" -name '*.swift') "$root/Fuzz/PortDevices/FuzzEntry.swift" -o "$out/fuzz-ports"
cd "$out"
"$out/fuzz-ports" -max_total_time="${1:-60}" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1 "$out/corpus"
