#!/usr/bin/env bash
# The main job for a newcomer: install what's needed, build vireo (release) and the Linux test
# guest (cached after the first build), and boot it with 2 vCPUs on this terminal.
#   scripts/boot-linux.sh            init prints a marker, nproc and the date, then reboots (vireo exits 0)
#   scripts/boot-linux.sh --shell    init execs a busybox shell instead: type commands in the guest
#   --nested                         run the guest inside the nested test host (scripts/nested-host.sh)
#   --direct                         run it on this host's KVM even where guest user space cannot work
# Where `vireo host-check` says this host's KVM emulates guest kernel mode (guest system calls never
# reach the guest kernel there: README, host note), the nested host is chosen automatically, with a
# note saying so. Extra arguments after -- go to `vireo run` (e.g. -- --cpus 4 -v).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=(vireo.reboot reboot=k)
extra=()
where=auto
while (($#)); do
    case "$1" in
        --shell) mode=(vireo.shell); shift ;;
        --nested) where=nested; shift ;;
        --direct) where=direct; shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: $0 [--shell] [--nested|--direct] [-- vireo-run-options...]" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
swift build -c release -j 2 --product vireo
guest_vars=$(bash scripts/build-linux-guest.sh)
kernel=$(printf '%s\n' "$guest_vars" | sed -n 's/^VIREO_GUEST_BZIMAGE=//p' | tail -1)
initrd=$(printf '%s\n' "$guest_vars" | sed -n 's/^VIREO_GUEST_INITRAMFS=//p' | tail -1)

if [ "$where" = auto ]; then
    where=direct
    if .build/release/vireo host-check | grep -q "profile.*emulated-kernel-mode"; then
        where=nested
        echo "boot-linux: note: this host's KVM emulates guest kernel mode, where guest system calls never reach" >&2
        echo "boot-linux: the guest kernel; booting inside the nested test host instead (--direct to override)." >&2
    fi
fi
# panic=-1: a guest that panics resets at once, which ends vireo run instead of hanging.
run=(.build/release/vireo run --kernel "$kernel" --initrd "$initrd" --cpus 2 --memory 512M
     --cmdline "console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on panic=-1 ${mode[*]}" "${extra[@]}")
if [ "$where" = nested ]; then
    echo "boot-linux: starting the nested host (an L1 under QEMU TCG, ~15 s), then booting $kernel in it (Ctrl-A X quits)" >&2
    exec bash scripts/nested-host.sh --interactive --timeout 0 -- "${run[@]}"
fi
echo "boot-linux: booting $kernel (Ctrl-A X quits)" >&2
exec "${run[@]}"
