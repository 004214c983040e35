#!/bin/bash
# Boots every guest QEMU can boot (multiboot and PVH) under pure software emulation (TCG) and
# checks its exact output lines and exit status; then checks the synthetic bzImages' structure.
# Usage: TestGuests/qemu-check.sh [OUT]   (after `make -C TestGuests OUT=...`; needs qemu-system-x86)
# QEMU's SeaBIOS lists only the first CPU of each package in its MP table, hence sockets=N.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "${1:-$HERE/out}" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf 'first line of the initrd\nsecond line\n' > "$TMP/initrd.txt"
failures=0

# run NAME STATUS INPUT SMP KERNEL APPEND [INITRD] -- EXPECTED LINES...
run() {
    local name=$1 want=$2 input=$3 smp=$4 kernel=$5 append=$6 initrd=$7
    shift 7
    local args=(-accel tcg -M pc -m 128 -smp "$smp,sockets=$smp,cores=1,threads=1" -display none
        -monitor none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
        -kernel "$OUT/$kernel" -append "$append")
    [ -n "$initrd" ] && args+=(-initrd "$initrd")
    [ "$name" = reset-exit ] && args+=(-no-reboot)
    printf '%s' "$input" | timeout 120 qemu-system-x86_64 "${args[@]}" > "$TMP/out" 2> "$TMP/err"
    local status=$? ok=1
    echo "=== $name: $kernel \"$append\" (status $status, want $want)"
    cat "$TMP/out"
    [ "$status" = "$want" ] || ok=0
    for line in "$@"; do
        grep -qFx -- "$line" "$TMP/out" || { echo "  missing line: $line"; ok=0; }
    done
    if [ $ok = 1 ]; then echo "PASS $name"; else echo "FAIL $name"; cat "$TMP/err"; failures=$((failures + 1)); fi
}

run hello 7 "" 1 mb-hello.elf "exit=3 extra" "$TMP/initrd.txt" \
    "hello: vireo test guest" "hello: cmdline=$OUT/mb-hello.elf exit=3 extra" \
    "hello: modules=1" "hello: module0 size=37 first=first line of the initrd" "hello: exit=3"
run hello-default 1 "" 1 mb-hello.elf "" "" "hello: modules=0" "hello: exit=0"
run echo-poll 1 "hello, World
abc q ignored" 1 mb-echo.elf "" "" "echo: ready" "HELLO, WORLD" "ABC " "echo: bye"
run echo-irq 1 "hello
q" 1 mb-echo.elf "irq" "" "echo: irq mode" "echo: ready" "HELLO" "echo: bye"
for n in 1 2 4; do
    lines=("smp: mp table says $n cpus" "smp: all $n cpus up")
    for ((i = 1; i < n; i++)); do lines+=("smp: cpu $i up"); done
    run "smp-$n" 1 "" "$n" mb-smp.elf "" "" "${lines[@]}"
done
run reset-exit 0 "" 1 mb-reset.elf "" "" "reset: boot #1"
run reset-restart 5 "" 1 mb-reset.elf "" "" "reset: boot #1" "reset: boot #2"
run user 1 "" 1 mb-user.elf "iters=1000" "" "user: pio loop start iters=1000 cpl=3" \
    "user: pio read 0xffffffff" "user: done 1000 iterations at cpl3"
run user-ticks 1 "" 1 mb-user.elf "ticks=3 spin=1000000" "" "user: tick 1" "user: tick 3"
run user-fault 255 "" 1 mb-user.elf "fault" "" "user: executing hlt at cpl3"
run pvh 11 "" 1 pvh-probe.elf "console=ttyS0 exit=5" "$TMP/initrd.txt" "pvh: magic ok" \
    "pvh: cmdline=console=ttyS0 exit=5" "pvh: modules=1" "pvh: module0 size=37 first=first line of the initrd"

echo "=== bzImages"
"$HERE/bzimage/verify-bzimages.sh" "$OUT" || failures=$((failures + 1))
echo "=== $failures failure(s)"
[ "$failures" = 0 ]
