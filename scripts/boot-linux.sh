#!/usr/bin/env bash
# The main job for a newcomer: install what's needed, build vireo (release) and the Linux test
# guest (cached after the first build), and boot it with 2 vCPUs on this terminal.
#   scripts/boot-linux.sh            init prints a marker, nproc and the date, then reboots (vireo exits 0)
#   scripts/boot-linux.sh --shell    init execs a busybox shell instead (needs a host where guest
#                                    user space can make system calls: see README, host note)
# Extra arguments after -- go to `vireo run` (e.g. -- --cpus 4 -v).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=(vireo.reboot reboot=k)
extra=()
while (($#)); do
    case "$1" in
        --shell) mode=(vireo.shell); shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: $0 [--shell] [-- vireo-run-options...]" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
swift build -c release -j 2 --product vireo
guest_vars=$(bash scripts/build-linux-guest.sh)
kernel=$(printf '%s\n' "$guest_vars" | sed -n 's/^VIREO_GUEST_BZIMAGE=//p' | tail -1)
initrd=$(printf '%s\n' "$guest_vars" | sed -n 's/^VIREO_GUEST_INITRAMFS=//p' | tail -1)

if .build/release/vireo host-check | grep -q "profile.*emulated-kernel-mode"; then
    echo "boot-linux: note: this host's KVM emulates guest kernel mode. Expect ~30-60 s to /init, and" >&2
    echo "boot-linux: init dying at its first system call (none reach the kernel here; README, host note)." >&2
fi
echo "boot-linux: booting $kernel (Ctrl-A X quits)" >&2
# panic=-1: a guest that panics resets at once, which ends vireo run instead of hanging.
exec .build/release/vireo run --kernel "$kernel" --initrd "$initrd" --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 8250.nr_uarts=1 random.trust_bootloader=on panic=-1 ${mode[*]}" "${extra[@]}"
