#!/usr/bin/env bash
# Remakes this corpus with the real tools (not run by the tests, which read the files here):
# virt-install's --print-xml output (NAME.print.xml) and what libvirt keeps after `virsh define`
# of it (NAME.xml, `virsh dumpxml --inactive`). Needs Debian 12's virtinst, osinfo-db,
# libvirt-clients and a running libvirtd with the QEMU driver (libvirt-daemon,
# libvirt-daemon-driver-qemu); the disk is made here and never started.
set -euo pipefail
cd "$(dirname "$0")"
disk=/var/tmp/vi.qcow2
qemu-img create -q -f qcow2 "$disk" 1G
: >/var/tmp/vmlinuz; : >/var/tmp/initrd.img
vi() { timeout 120 virt-install --connect qemu:///system --print-xml --noautoconsole "$@"; }
make_one() {
    local name=$1; shift
    vi --name "$name" "$@" >"$name.print.xml"
    virsh -c qemu:///system define "$name.print.xml" >/dev/null
    virsh -c qemu:///system dumpxml --inactive "$name" >"$name.xml"
    virsh -c qemu:///system undefine --nvram "$name" >/dev/null
}
d="--disk path=$disk,driver.type=qcow2"
# virt-install --import, user networking (libvirt's unprivileged default).
make_one vi-debian11-import --memory 2048 --vcpus 2 --import $d --osinfo debian11 --network user --graphics none
# The same with UEFI (virt-install --boot uefi: <os firmware='efi'>).
make_one vi-debian11-uefi --memory 2048 --vcpus 2 --import $d --osinfo debian11 --boot uefi --network none --graphics none
# A bridge, and the empty CD-ROM drive an install leaves behind.
make_one vi-debian11-bridge-cdrom --memory 1536 --vcpus 2 --import $d --disk device=cdrom,bus=sata --osinfo debian11 \
    --network bridge=br0 --graphics none
# Direct kernel boot.
make_one vi-kernel-boot --memory 512 --vcpus 1 --import $d --osinfo linux2022 \
    --boot kernel=/var/tmp/vmlinuz,initrd=/var/tmp/initrd.img,kernel_args="console=ttyS0 root=/dev/vda" --network none --graphics none
# virt-manager's new-VM wizard (it builds domains with the same virtinst library): NAT network,
# SPICE, virtio video, sound, tablet, spicevmc channel, RNG.
make_one vm-wizard-default --memory 4096 --vcpus 2 --import $d --osinfo debian11 --network network=default \
    --graphics spice --video virtio --channel spicevmc --sound ich9 --input tablet --rng /dev/urandom
