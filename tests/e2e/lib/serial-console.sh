# Helpers for the firmware e2e tests, which watch a VM's serial console: the test sets $serial (the
# console's file), $log (the VM process's output), $vm_pid and $started (date +%s.%N) when it
# starts a VM, and $from (bytes of cleaned console already matched) before waiting.
stop_vm() { kill "$vm_pid" 2>/dev/null; wait "$vm_pid" 2>/dev/null; vm_pid=; }
# No CRs and no terminal control sequences: SeaBIOS's serial console renders the BIOS screen, and
# OVMF's terminal its screen, with cursor moves and modes (ESC [row;colH, ESC [=3h, ESC [0m) that can
# land between a boot loader's words.
clean() { tr -d '\r' <"$serial" | sed 's/\x1b\[[0-9;?=]*[A-Za-z]//g; s/\x1bc//g'; }
since() { awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# wait_for REGEX DEADLINE: true once the serial output after byte $from matches; false at the
# deadline or when the VM has gone. Sets $from past the match, so the next pattern must come later.
wait_for() {
    local at
    while :; do
        at=$(clean | tail -c +"$((from + 1))" | grep -aboE -m1 -- "$1" | head -1 | cut -d: -f1)
        [ -n "$at" ] && { from=$((from + at + 1)); return 0; }
        kill -0 "$vm_pid" 2>/dev/null && [ "$(date +%s)" -lt "$2" ] && ! stuck || return 1
        sleep 0.5
    done
}
# A vCPU the host's KVM could not run (QEMU pauses the VM then, and waiting longer is pointless).
stuck() { grep -qaE 'KVM internal error|emulation failure' "$log"; }
why() { grep -aE -m3 'error|emulation failure|internal error|panic|Suberror' "$log" | tr '\n' ' '; }
# check_stages PREFIX STAGE...: each STAGE is 'REGEX|what it shows'; waits for each in order
# (until $deadline), passing or failing it (with PREFIX before its name); after the first miss the
# rest fail as not reached. Leaves $reached = yes when all were seen.
check_stages() {
    local prefix=$1 stage regex said; shift
    for stage in "$@"; do
        regex=${stage%|*} said=$prefix${stage##*|}
        if [ "$reached" = yes ] && wait_for "$regex" "$deadline"; then
            pass "$said after $(since)s: $(clean | grep -aoE -m1 -- "$regex.{0,40}" | head -1)"
        elif [ "$reached" = yes ]; then
            reached=no
            if stuck; then fail "$said: the vCPU stopped after $(since)s before '$regex': $(why)"
            elif kill -0 "$vm_pid" 2>/dev/null; then fail "$said: no '$regex' within ${timeout_s}s"
            else wait "$vm_pid"; fail "$said: the VM ended (status $?) after $(since)s before '$regex': $(why)"; fi
        else
            fail "$said: not reached"
        fi
    done
}
