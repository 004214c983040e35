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

# The nested host's own failures are one line and exit 70: no QEMU, and an L1 without SVM (so
# without /dev/kvm). Counted with the suite's results below.
early=()
expect_error() {  # name expected-text command...
    local name=$1 want=$2 err status began=$(date +%s); shift 2
    err=$("$@" 2>&1 >/dev/null); status=$?
    err=$(grep '^nested-host: error: ' <<<"$err" | tail -1)
    if [ $status -eq 70 ] && grep -qF "$want" <<<"$err"; then early+=("$name ok $(( $(date +%s) - began ))"); note "$name: $err"
    else early+=("$name FAILED $(( $(date +%s) - began ))"); note "$name: wanted status 70 and '$want', got status $status: '${err:-no error line}'"; fi
}
expect_error "nested-host without QEMU: one-line error" "qemu-system-x86_64 is missing" \
    env VIREO_QEMU=/nonexistent bash "$repo/scripts/nested-host.sh" -- true
expect_error "nested-host, L1 without SVM: one-line error" "L1 has no /dev/kvm" \
    bash "$repo/scripts/nested-host.sh" --qemu-cpu qemu64,-svm --timeout 300 -- true

share=$repo/.build/e2e/nested
rm -rf "$share"; mkdir -p "$share"
l1_started=$(date +%s)
bash "$repo/scripts/nested-host.sh" --share "$share" --timeout "${VIREO_NESTED_TIMEOUT:-1800}" \
    -- bash tests/e2e/nested-suite.sh
status=$?
note "nested host finished with status $status after $(( $(date +%s) - l1_started ))s (L1 boot included)"

passed=0 failed=0
[ -s "$share/results" ] || { failed=1; note "FAIL: the suite in L1 reported nothing (status $status)"; }
while read -r line; do
    [ -n "$line" ] || continue
    seconds=${line##* }; rest=${line% *}; verdict=${rest##* }; name=${rest% *}
    if [ "$verdict" = ok ]; then passed=$((passed + 1)); note "PASS: $name (${seconds}s)"
    else failed=$((failed + 1)); note "FAIL: $name (${seconds}s)"; fi
done < <(printf '%s\n' "${early[@]}"; cat "$share/results" 2>/dev/null)
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || { failed=1; note "FAIL: nested-host.sh exited $status"; }
note "logs: $share/logs"
echo "e2e-nested: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
