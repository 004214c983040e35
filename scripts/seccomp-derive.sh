#!/bin/bash
# Derives (or checks) the VMM's seccomp policy from real runs: runs a command with
# VIREO_SECCOMP=log, so every `vireo run` it starts makes the calls its filters do not list.
#
# With --strace (the precise way): the command runs under `strace -f`, and
# scripts/seccomp-trace-summary.py lists, per thread kind, each call a confined thread made that
# `vireo seccomp-policy` does not allow, and the ioctl requests made (to check by eye against the
# request lists). Without it: the kernel's log of the calls (dmesg: "audit: type=1326 ...
# comm=THREAD ... syscall=N"), printed once per thread kind; cheaper, but the kernel rate-limits
# those lines ("kauditd_printk_skb: N callbacks suppressed"), so a quiet list proves less.
# An empty list means the policy (Sources/Sandbox/SyscallPolicy.swift) covered everything the
# command did. Needs root (dmesg) and, without --strace, a kernel whose
# /proc/sys/kernel/seccomp/actions_logged includes "log".
#
#   scripts/seccomp-derive.sh --strace -- bash tests/e2e/linux-devices.sh
#   scripts/seccomp-derive.sh -- swift test --skip-build --filter VireoCLITests
#   scripts/seccomp-derive.sh            # the default workloads: the CLI and daemon test suites
set -euo pipefail
cd "$(dirname "$0")/.."
use_strace=0
if [ "${1:-}" = "--strace" ]; then use_strace=1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then
    set -- swift test -j 2 --skip-build --filter 'VireoCLITests|DaemonProcessTests|DaemonVMTests|DaemonSaveRestoreTests|DaemonManagedSaveTests|DaemonMigrationTests|DaemonShutdownFallbackTests|DaemonRestartBackoffTests|DaemonUEFIVariableStoreTests'
fi
if [ $use_strace = 1 ]; then
    trace=$(mktemp /tmp/seccomp-trace.XXXXXX)
    status=0
    VIREO_SECCOMP=log strace -f -qq -e signal=none -s 64 -o "$trace" "$@" || status=$?
    python3 scripts/seccomp-trace-summary.py "$trace" "${VIREO_BIN:-.build/debug/vireo}"
    rm -f "$trace"
    echo "== command exit status: $status =="
    exit $status
fi
grep -qw log /proc/sys/kernel/seccomp/actions_logged || { echo "seccomp-derive: this kernel does not log SECCOMP_RET_LOG" >&2; exit 77; }
before=$(dmesg | wc -l)
status=0
VIREO_SECCOMP=log "$@" || status=$?
# Let the kernel's audit thread drain.
sleep 2
echo "== calls outside the policy (kind, call, threads) =="
dmesg | tail -n +"$((before + 1))" | grep 'type=1326' | grep -o 'comm="[^"]*".*syscall=[0-9]*' |
    sed -E 's/comm="([^"]*)".*syscall=([0-9]+)/\1 \2/' | while read -r comm number; do
        case "$comm" in
            vcpu[0-9]*) kind=vcpu ;;
            vblk*|vnet*|vcon|vrng|vsock*|vballoon*) kind=io ;;
            *) kind=control ;;
        esac
        name=$(awk -v n="$number" '$1 == "#define" && $3 == n { sub("__NR_", "", $2); print $2; exit }' /usr/include/x86_64-linux-gnu/asm/unistd_64.h)
        echo "$kind ${name:-$number} $comm"
    done | sort | awk '{ key = $1 " " $2; if (!(key in threads)) order[++n] = key; threads[key] = threads[key] " " $3 }
                     END { for (i = 1; i <= n; i++) print order[i] ":" threads[order[i]] }' | sort -u
echo "== command exit status: $status =="
exit $status
