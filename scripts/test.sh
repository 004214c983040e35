#!/usr/bin/env bash
# The test command (README, and .ci/run): setup, build, unit + integration tests, then the Linux
# end-to-end boot. Prints a closing "N passed, N failed" summary line for the whole run.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1

passed=0; failed=0
step() {
    local name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); echo "=== $name: ok"
    else failed=$((failed + 1)); echo "=== $name: FAILED"; fi
}

# Two cores: keep the build's parallelism at that.
step "swift build" swift build -j 2
step "swift test" swift test -j 2
if [ "${VIREO_SKIP_E2E:-0}" = "1" ]; then
    echo "=== linux e2e: skipped because VIREO_SKIP_E2E=1 (not counted as passed)"
else
    step "build linux guest" bash scripts/build-linux-guest.sh
    step "linux e2e" bash tests/e2e/linux-boot.sh
fi

echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
