#!/usr/bin/env bash
# Runs inside the nested test host's L1 (started by tests/e2e/nested.sh through
# scripts/nested-host.sh), where /dev/kvm has real-hardware semantics: the host profile must come
# out native, and the Linux end-to-end tests must reach their full (guest user space) cases.
# Writes "<name> ok|FAILED <seconds>" lines to $VIREO_NESTED_SHARE/results.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
share=${VIREO_NESTED_SHARE:?run this through tests/e2e/nested.sh}
results=$share/results
: >"$results"
export VIREO_E2E_LOG_DIR=$share/logs VIREO_BIN=$vireo VIREO=$vireo
mkdir -p "$VIREO_E2E_LOG_DIR"

run() {  # name command...
    local name=$1 started status; shift
    echo "=== nested: $name"
    started=$(date +%s)
    "$@"; status=$?
    echo "$name $([ $status -eq 0 ] && echo ok || echo FAILED) $(( $(date +%s) - started ))" >>"$results"
    echo "=== nested: $name: $([ $status -eq 0 ] && echo ok || echo "FAILED (status $status)")"
}

# The profile L1's KVM gets: chosen by how much slower CPL0 is than CPL3, it must be native here.
profile_check() {
    local report profile
    report=$("$vireo" host-check 2>&1)
    grep -E 'guest kernel mode|host profile' <<<"$report"
    profile=$(sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' <<<"$report" | head -1)
    [ "$profile" = native ] || { echo "nested: the host profile in L1 is '${profile:-none}', wanted native"; return 1; }
}
run "host-check picks native in L1" profile_check
# Full cases are required wherever the profile is native (each script checks that itself).
run "linux-boot (full)" env VIREO_E2E_KERNEL=bzImage bash "$repo/tests/e2e/linux-boot.sh"
run "linux-devices (full)" env VIREO_E2E_DEVICES_MODE=full bash "$repo/tests/e2e/linux-devices.sh"
run "linux-debian (stock kernel)" bash "$repo/tests/e2e/linux-debian.sh"
run "linux-snapshot (save and restore under a counting guest process)" bash "$repo/tests/e2e/linux-snapshot.sh"
! grep -q ' FAILED ' "$results"
