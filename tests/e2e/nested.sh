#!/usr/bin/env bash
# The Linux end-to-end tests that need guest user space, run where it works: inside the nested
# test host (scripts/nested-host.sh: an L1 under QEMU TCG whose KVM has real semantics). Builds or
# finds the guests on this host, boots L1 once, runs tests/e2e/nested-suite.sh there, and reports
# each test with its time. Logs come back to .build/e2e/nested/logs.
# Environment: VIREO_BIN (default .build/debug/vireo); VIREO_NESTED_TIMEOUT (default 1800 s).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export VIREO_BIN=${VIREO_BIN:-$repo/.build/debug/vireo}
note() { echo "e2e-nested: $*"; }
[ -x "$VIREO_BIN" ] || { note "FAIL: no vireo at $VIREO_BIN (swift build first)"; echo "e2e-nested: 0 passed, 1 failed"; exit 1; }

started=$(date +%s)
guest_vars=$("$repo/scripts/build-linux-guest.sh") || { note "FAIL: scripts/build-linux-guest.sh failed"; exit 1; }
debian_vars=$("$repo/scripts/build-debian-guest.sh") || { note "FAIL: scripts/build-debian-guest.sh failed"; exit 1; }
while IFS= read -r line; do
    case "$line" in VIREO_GUEST_*=*|VIREO_DEBIAN_*=*) export "${line?}" ;; esac
done <<<"$guest_vars"$'\n'"$debian_vars"
note "guests ready after $(( $(date +%s) - started ))s"

share=$repo/.build/e2e/nested
rm -rf "$share"; mkdir -p "$share"
l1_started=$(date +%s)
bash "$repo/scripts/nested-host.sh" --share "$share" --timeout "${VIREO_NESTED_TIMEOUT:-1800}" \
    -- bash tests/e2e/nested-suite.sh
status=$?
note "nested host finished with status $status after $(( $(date +%s) - l1_started ))s (L1 boot included)"

passed=0 failed=0
if [ -s "$share/results" ]; then
    while read -r line; do
        seconds=${line##* }; rest=${line% *}; verdict=${rest##* }; name=${rest% *}
        if [ "$verdict" = ok ]; then passed=$((passed + 1)); note "PASS: $name (${seconds}s in L1)"
        else failed=$((failed + 1)); note "FAIL: $name (${seconds}s in L1)"; fi
    done <"$share/results"
else
    failed=1; note "FAIL: the suite reported nothing (status $status)"
fi
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || { failed=1; note "FAIL: nested-host.sh exited $status"; }
note "logs: $share/logs"
echo "e2e-nested: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
