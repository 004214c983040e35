#!/usr/bin/env bash
# Runs inside the nested test host's L1 (started by tests/e2e/nested.sh through
# scripts/nested-host.sh), where /dev/kvm has real-hardware semantics: the host profile must come
# out native, and the Linux end-to-end tests must reach their full (guest user space) cases.
# Writes "<name> ok|ok-retried|FAILED <seconds>" lines to $VIREO_NESTED_SHARE/results (ok-retried: a
# failure that passed when run once more, see run() below). Each test has
# VIREO_NESTED_TEST_TIMEOUT seconds (default 900): one that hangs while L1 lives fails by name and
# the suite goes on (an L1 that stops altogether is nested-host.sh's watchdog's to report).
# $VIREO_NESTED_SHARE/finished: results lines of tests an earlier L1 finished before it failed
# (wedged or panicked: tests/e2e/nested.sh runs the suite again); those that passed are carried
# over, not run again. Failures are not: an L1 on its way to a wedge starves the test scripts (a
# snapshot test saw its guest count to the end before its next save) while its guests run on.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
share=${VIREO_NESTED_SHARE:?run this through tests/e2e/nested.sh}
results=$share/results
: >"$results"
export VIREO_E2E_LOG_DIR=$share/logs VIREO_BIN=$vireo VIREO=$vireo
mkdir -p "$VIREO_E2E_LOG_DIR"

test_timeout=${VIREO_NESTED_TEST_TIMEOUT:-900}
[[ $test_timeout =~ ^[1-9][0-9]*$ ]] || { echo "nested: VIREO_NESTED_TEST_TIMEOUT must be seconds, not '$test_timeout'"; exit 2; }
stamp=$VIREO_E2E_LOG_DIR/.test-started

# After a timeout: what the test left running in process groups of its own (a `timeout` inside
# the test makes one, so the outer timeout's signals miss it) dies too, before the next test.
# Only where this suite leads its own session, as in L1 (nested-host.sh runs it under setsid).
reap_leftovers() {
    local stat line fields pid
    line=$(</proc/$$/stat); read -r -a fields <<<"${line##*) }"   # state ppid pgrp session ...
    [ "${fields[3]}" = "$$" ] || return 0
    for stat in /proc/[0-9]*/stat; do
        { line=$(<"$stat"); } 2>/dev/null || continue
        pid=${line%% *}
        read -r -a fields <<<"${line##*) }"
        [ "${fields[3]}" = "$$" ] && [ "$pid" != "$$" ] && kill -KILL "$pid" 2>/dev/null
    done
    return 0
}

# One run of a test: sets status and elapsed, prints the verdict and, on failure, its newest log.
attempt() {  # name command...
    local name=$1 started newest; shift
    touch "$stamp"
    started=$(date +%s)
    # The test's stderr is fd 3; the shell's own is /dev/null here, so that a test killed on timeout
    # gets no "Killed" job line besides the verdict below.
    { timeout --kill-after=10 "$test_timeout" "$@" </dev/null 2>&3 3>&-; status=$?; } 3>&2 2>/dev/null
    elapsed=$(( $(date +%s) - started ))
    timed_out=no
    [ $status -eq 0 ] && return 0
    # 124: timeout's TERM ended it; 137: its KILL, 10 s later (a test's own 124 ends sooner).
    if { [ $status -eq 124 ] || [ $status -eq 137 ]; } && [ "$elapsed" -ge "$test_timeout" ]; then
        timed_out=yes
        reap_leftovers
        echo "=== nested: $name: FAILED (timed out after ${test_timeout}s)"
    else
        echo "=== nested: $name: FAILED (status $status)"
    fi
    newest=$(find "$VIREO_E2E_LOG_DIR" -type f -newer "$stamp" ! -name '.*' -printf '%T@ %p\n' 2>/dev/null \
        | sort -n | tail -1 | cut -d' ' -f2-)
    if [ -n "$newest" ]; then
        echo "=== nested: $name: last 30 lines of $newest:"
        tail -n 30 "$newest" | tr -d '\r' | sed 's/^/  | /'
    else
        echo "=== nested: $name: it wrote no log under $VIREO_E2E_LOG_DIR"
    fi
    return 1
}

# A test that fails (but did not time out) runs once more: QEMU TCG's nested SVM, which L1's KVM
# runs on, fails on its own at times (L1 panics and wedges are nested.sh's to retry; guests in a
# live L1 have also reset out of the blue). A test that passes only the second time is reported
# as such (verdict "ok-retried", and the first run's output above it), never as a plain pass; one
# that fails twice fails.
run() {  # name command...
    local name=$1 finished first; shift
    finished=$(grep -sF -- "$name " "$share/finished" | grep -E "^.* ok(-retried)? [0-9]+$" | head -1)
    if [ -n "$finished" ] && [ "${finished% * *}" = "$name" ]; then
        echo "$finished" >>"$results"
        echo "=== nested: $name: passed in the earlier L1 (${finished#"$name "}), not run again"
        return
    fi
    echo "=== nested: $name"
    if attempt "$name" "$@"; then
        echo "$name ok $elapsed" >>"$results"
        echo "=== nested: $name: ok"
        return
    fi
    if [ "$timed_out" = yes ] || [ "${VIREO_NESTED_RETRY:-1}" = 0 ]; then
        echo "$name FAILED $elapsed" >>"$results"
        return
    fi
    first="status $status after ${elapsed}s"
    echo "=== nested: $name: running it once more (the first run failed: $first)"
    if attempt "$name" "$@"; then
        echo "$name ok-retried $elapsed" >>"$results"
        echo "$name: the first run failed ($first), the second passed" >>"$share/retried"
        echo "=== nested: $name: ok on the second run (the first failed: $first)"
    else
        echo "$name FAILED $elapsed" >>"$results"
    fi
}

# The profile L1's KVM gets: chosen by how much slower CPL0 is than CPL3, it must be native here.
profile_check() {
    local report profile
    report=$("$VIREO_BIN" host-check 2>&1)
    grep -E 'guest kernel mode|host profile' <<<"$report"
    profile=$(sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' <<<"$report" | head -1)
    [ "$profile" = native ] || { echo "nested: the host profile in L1 is '${profile:-none}', wanted native"; return 1; }
}
export -f profile_check   # run's timeout runs commands, not functions
run "host-check picks native in L1" bash -c profile_check
# Full cases are required wherever the profile is native (each script checks that itself).
run "linux-boot (full)" env VIREO_E2E_KERNEL=bzImage bash "$repo/tests/e2e/linux-boot.sh"
run "linux-devices (full)" env VIREO_E2E_DEVICES_MODE=full bash "$repo/tests/e2e/linux-devices.sh"
run "linux-devices (full, user networking on passt: TCP out to a host service, in through a port forward)" env VIREO_E2E_DEVICES_MODE=full VIREO_E2E_DEVICES_NET=user bash "$repo/tests/e2e/linux-devices.sh"
run "linux-debian (stock kernel)" bash "$repo/tests/e2e/linux-debian.sh"
run "firmware-boot (SeaBIOS, SYSLINUX, stock kernel to user space)" bash "$repo/tests/e2e/firmware-boot.sh"
# Not uefi-boot: OVMF in L2 aborts this L1's QEMU (TCG's SVM calls cpu_interrupt without the big
# QEMU lock, "tcg_handle_interrupt: assertion failed", with Debian 12's QEMU 7.2 and with 10.0.2
# from bookworm-backports alike), taking every later test with it; see tests/e2e/uefi-boot.sh.
run "linux-snapshot (save and restore under a counting guest process)" bash "$repo/tests/e2e/linux-snapshot.sh"
run "linux-migration (4 live migrations under a counting guest process, TCP across)" bash "$repo/tests/e2e/linux-migration.sh"
run "linux-migration, copy_storage (2 migrations, each destination its own disk image)" env VIREO_E2E_MIGRATION_STORAGE=copy VIREO_E2E_MIGRATIONS=2 bash "$repo/tests/e2e/linux-migration.sh"
run "linux-migration, post-copy (2 migrations switched to post-copy after one round)" env VIREO_E2E_MIGRATION_REQUEST='{"postcopy":true,"max_downtime_ms":0.001}' VIREO_E2E_MIGRATIONS=2 bash "$repo/tests/e2e/linux-migration.sh"
run "lvm-pool (a logical storage pool: vgcreate, lvcreate, lvremove through the CLI and the daemon)" bash "$repo/tests/e2e/lvm-pool.sh"
run "cgroups-v2 (VM limits on pure cgroup v2: placement, limit files, an OOM kill reported as such)" bash "$repo/tests/e2e/cgroups-v2.sh"
run "cloud-install (vireo install --import of a Debian cloud image with a cloud-init seed)" env VIREO_E2E_TIMEOUT=800 bash "$repo/tests/e2e/cloud-install.sh"
! grep -q ' FAILED ' "$results"
