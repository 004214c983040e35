#!/usr/bin/env bash
# End to end for `vireo install --import`: a Debian 12 cloud image (scripts/build-cloud-image.sh:
# cloud-init, openssh-server, Debian's kernel, SYSLINUX on an MBR disk) made into a VM the way
# virt-install --import does it: a `vireo daemon` on a temporary state dir, then
#   vireo install --name ci-vm --memory 1G --cpus 2 --import \
#       --disk size=4G,backing=IMAGE,path=WORK/ci-vm.qcow2 --cloud-init user-data=WORK/user-data --noautoconsole
# Checks the overlay (qcow2 on IMAGE) and the NoCloud seed (ISO 9660, volume cidata) exist and the
# VM runs; then, on the VM's serial log (STATE/vms/ci-vm/serial.log), in this order: SeaBIOS,
# SYSLINUX, the kernel, systemd from the image's root, cloud-init, and the lines the user-data's
# runcmd writes to /dev/ttyS0: the user vireo made (id), this run's SSH key in its
# authorized_keys, the hostname from the seed's meta-data, the seed read from a disk, the root file
# system grown to fill the 4G overlay (growpart + resize2fs); then cloud-init's power_state powers
# the VM off and the daemon reports "shut off (shutdown)". The backing image must be left untouched.
#
# Needs guest user space: where `vireo host-check` picks the emulated-kernel-mode profile (our
# development hosts; shared/HOST-KVM.md) it says so and exits 77 (skipped); it runs in the nested
# test host, which sees the host's files read-only, so build the image first and pass it in
# (VIREO_CLOUD_IMAGE=... scripts/nested-host.sh -- bash tests/e2e/cloud-install.sh).
# Environment: VIREO_BIN (default .build/debug/vireo), VIREO_CLOUD_IMAGE (else built here with
# scripts/build-cloud-image.sh, which needs root), VIREO_E2E_TIMEOUT (seconds from the start to
# power-off, default 900), VIREO_E2E_LOG_DIR (default .build/e2e; $VIREO_NESTED_SHARE/logs in the
# nested test host), VIREO_E2E_INSTALL_MODE:
#   install (default)  as above;
#   run                the same checks with the same kind of overlay and seed made here, booted by
#                      `vireo run --firmware bios` (no daemon, no install command);
#   qemu               the same with qemu-system-x86_64 -M pc and Debian's SeaBIOS
#                      (VIREO_E2E_QEMU_ACCEL=kvm (default) | tcg); checks the image and this script.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vireo=${VIREO_BIN:-$repo/.build/debug/vireo}
timeout_s=${VIREO_E2E_TIMEOUT:-900}
# In the nested test host the repository is read-only: logs go to its share unless told otherwise.
log_dir=${VIREO_E2E_LOG_DIR:-${VIREO_NESTED_SHARE:+$VIREO_NESTED_SHARE/logs}}
log_dir=${log_dir:-$repo/.build/e2e}
mode=${VIREO_E2E_INSTALL_MODE:-install}
accel=${VIREO_E2E_QEMU_ACCEL:-kvm}
seabios=/usr/share/seabios/bios-256k.bin
name=ci-vm disk_size=4G
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "e2e-cloud: PASS: $*"; }
fail() { failed=$((failed + 1)); echo "e2e-cloud: FAIL: $*"; }
note() { echo "e2e-cloud: $*"; }
finish() { echo "e2e-cloud: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

case "$mode" in
    install|run) [ -x "$vireo" ] || { fail "no vireo at $vireo (swift build first)"; finish; }
        profile=$("$vireo" host-check 2>/dev/null | sed -n 's/.*host profile *: *\([a-z-]*\).*/\1/p' | head -1)
        if [ "$profile" = emulated-kernel-mode ]; then
            note "skipped here: this host emulates guest kernel mode, where Debian's kernel takes hours to boot and its user space cannot make system calls, so cloud-init never runs; tests/e2e/nested.sh runs this test in the nested test host"
            exit 77
        fi ;;
    qemu) command -v qemu-system-x86_64 >/dev/null && [ -r "$seabios" ] ||
              { fail "VIREO_E2E_INSTALL_MODE=qemu needs qemu-system-x86_64 and $seabios (seabios)"; finish; }
          case "$accel" in kvm) cpu=host,-arch-capabilities ;; tcg) cpu=max ;;
              *) fail "VIREO_E2E_QEMU_ACCEL must be kvm or tcg"; finish ;; esac ;;
    *) fail "VIREO_E2E_INSTALL_MODE must be install, run or qemu"; finish ;;
esac
for tool in qemu-img genisoimage isoinfo; do
    command -v $tool >/dev/null || { fail "no $tool (scripts/setup.sh installs qemu-utils and genisoimage)"; finish; }
done
if [ -z "${VIREO_CLOUD_IMAGE:-}" ]; then
    note "no VIREO_CLOUD_IMAGE: building it (scripts/build-cloud-image.sh)"
    vars=$("$repo/scripts/build-cloud-image.sh") || { fail "scripts/build-cloud-image.sh failed"; finish; }
    VIREO_CLOUD_IMAGE=$(sed -n 's/^VIREO_CLOUD_IMAGE=//p' <<<"$vars")
fi
image=$VIREO_CLOUD_IMAGE
[ -r "$image" ] || { fail "no cloud image at $image"; finish; }
image_stamp=$(stat -c '%s %Y' "$image")

work=$(mktemp -d)
daemon_pid= vm_pid= state=$work/state sock=$work/api.sock
v() { "$vireo" "$@" --socket "$sock"; }
cleanup() {
    if [ "$mode" = install ] && [ -n "$daemon_pid" ]; then
        v destroy "$name" >/dev/null 2>&1
        kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
        # A VM process outlives its daemon by design: the one this test's daemon started goes too.
        for pid in $(pgrep -f -- "$state/vms/$name/" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    fi
    [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# --- the seed's files: a user with this run's key; runcmd reports on the serial port ----------------
if command -v ssh-keygen >/dev/null; then
    ssh-keygen -q -t ed25519 -N '' -C "vireo-e2e-$$" -f "$work/id_ed25519" && key=$(cat "$work/id_ed25519.pub")
else
    key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI6YG+Ln5jfI58/7vdYIZ92i/Eomc9jADe3l1lQcQU vireo-e2e"
fi
cat >"$work/user-data" <<EOF
#cloud-config
users:
  - name: vireo
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - $key
runcmd:
  - |
    say() { echo "VIREO-CLOUD: \$*" >/dev/ttyS0; }
    say "user vireo: \$(id vireo)"
    say "key: \$(cat /home/vireo/.ssh/authorized_keys)"
    say "hostname: \$(hostname)"
    say "seed: \$(cloud-init query subplatform 2>&1)"
    say "root: \$(df -BM --output=size / | tail -1 | tr -d ' ') on \$(findmnt -no SOURCE /)"
    say "powering off"
power_state:
  mode: poweroff
  delay: now
  message: VIREO-CLOUD power_state
EOF
printf 'instance-id: iid-%s-%s\nlocal-hostname: %s\n' "$name" "$(date +%s)" "$name" >"$work/meta-data"

mkdir -p "$log_dir" && [ -w "$log_dir" ] || { fail "cannot write logs to $log_dir (VIREO_E2E_LOG_DIR)"; finish; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log=$log_dir/cloud-install-$stamp.log
overlay=$work/$name.qcow2
started=$(date +%s.%N)
since() { awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
deadline=$(( $(date +%s) + timeout_s ))

# --- the VM ---------------------------------------------------------------------------------------
if [ "$mode" = install ]; then
    serial=$state/vms/$name/serial.log seed=$work/$name-cidata.iso
    "$vireo" daemon --state-dir "$state" --socket "$sock" </dev/null >"$log_dir/cloud-install-$stamp.daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] || ! kill -0 "$daemon_pid" 2>/dev/null && break; sleep 0.2; done
    [ -S "$sock" ] || { fail "vireo daemon made no socket in 20s: $(tail -3 "$log_dir/cloud-install-$stamp.daemon.log")"; finish; }
    note "vireo install --name $name (backing $image); up to ${timeout_s}s to power-off"
    out=$(timeout 300 "$vireo" install --name "$name" --memory 1G --cpus 2 --import \
              --disk "size=$disk_size,backing=$image,path=$overlay" --cloud-init "user-data=$work/user-data" \
              --noautoconsole --socket "$sock" </dev/null 2>&1)
    rc=$?
    printf '%s\n' "$out" >"$log"
    if [ $rc -ne 0 ]; then
        fail "vireo install exited with status $rc: $(tail -3 <<<"$out" | tr '\n' ' ')"
        grep -q "nexpected argument 'install'\|nknown subcommand" <<<"$out" &&
            note "this vireo has no install command; VIREO_E2E_INSTALL_MODE=run checks the image with vireo run"
        finish
    fi
    pass "vireo install defined and started $name: $(grep -v '^$' <<<"$out" | tail -1)"
    backing=$(qemu-img info --output=json -U "$overlay" 2>/dev/null | sed -n 's/.*"backing-filename": "\(.*\)",*$/\1/p' | head -1)
    vsize=$(qemu-img info --output=json -U "$overlay" 2>/dev/null | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1)
    if [ "$backing" = "$image" ] && [ "${vsize:-0}" = $((4 << 30)) ]; then pass "overlay $overlay: qcow2, 4 GiB, backing file $image"
    else fail "overlay $overlay: wanted 4 GiB on $image, got backing '${backing:-none}', size ${vsize:-none}"; fi
    if isoinfo -d -i "$seed" 2>/dev/null | grep -q '^Volume id: cidata$'; then
        pass "seed $seed: ISO 9660 volume cidata with $(isoinfo -f -R -i "$seed" | tr '\n' ' ')"
    else fail "no NoCloud seed (volume cidata) at $seed"; fi
    state_now=$(v domstate "$name" 2>&1 | head -1)
    [ "$state_now" = running ] && pass "domstate $name: running" || fail "domstate $name: '$state_now', wanted running"
    alive() { [ "$(v domstate "$name" 2>/dev/null | head -1)" = running ]; }
    why() { tail -5 "$state/vms/$name/vireo-run.log" 2>/dev/null | tr '\n' ' '; }
else
    serial=$log_dir/cloud-install-$stamp.serial seed=$work/seed.iso
    qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$overlay" "$disk_size" || { fail "qemu-img create failed"; finish; }
    (cd "$work" && genisoimage -quiet -output "$seed" -volid cidata -joliet -rock user-data meta-data) ||
        { fail "genisoimage failed"; finish; }
    : >"$serial"
    if [ "$mode" = qemu ]; then
        note "qemu-system-x86_64 ($accel), overlay on $image + seed; up to ${timeout_s}s to power-off"
        qemu-system-x86_64 -M pc,graphics=off -accel "$accel" -cpu "$cpu" -m 1G -smp 2 -bios "$seabios" \
            -drive "file=$overlay,format=qcow2,if=virtio" -drive "file=$seed,format=raw,if=virtio,readonly=on" \
            -nic none -display none -serial "file:$serial" -no-reboot </dev/null >"$log" 2>&1 &
    else
        note "vireo run --firmware bios, overlay on $image + seed; up to ${timeout_s}s to power-off"
        "$vireo" run --firmware bios --cpus 2 --memory 1G --disk "path=$overlay,format=qcow2" \
            --disk "path=$seed,format=raw,readonly=on" --serial-log "$serial" </dev/null >"$log" 2>&1 &
    fi
    vm_pid=$!
    alive() { kill -0 "$vm_pid" 2>/dev/null; }
    why() { grep -aE -m3 'error|emulation failure|internal error|panic' "$log" | tr '\n' ' '; }
fi
note "serial: $serial"

# --- the serial console, stage by stage -------------------------------------------------------------
clean() { tr -d '\r' <"$serial" 2>/dev/null | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'; }   # no CRs, no colours
# wait_for REGEX: true once the serial output after byte $from matches (and sets $from past it);
# false at the deadline or when the VM has gone.
from=0
wait_for() {
    local at
    while :; do
        at=$(clean | tail -c +"$((from + 1))" | grep -aboE -m1 -- "$1" | head -1 | cut -d: -f1)
        [ -n "$at" ] && { from=$((from + at + 1)); return 0; }
        alive && [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}
ere() { sed 's/[][\.*^$+?(){}|/]/\\&/g' <<<"$1"; }
stages=('SeaBIOS \(version [^)]*\)|SeaBIOS runs'
        'SYSLINUX [0-9.]+ |SYSLINUX boots from the image'
        'Linux version [^ ]+|the image'"'"'s kernel starts'
        'Welcome to Debian GNU/Linux 12|systemd starts from the root file system'
        "Cloud-init v\\. [0-9.]+[^ ]* running 'init'|cloud-init runs"
        'VIREO-CLOUD: user vireo: uid=[0-9]+\(vireo\)|cloud-init made the user vireo'
        "VIREO-CLOUD: key: $(ere "$key")\$|cloud-init put this run's SSH key in ~vireo/.ssh/authorized_keys"
        "VIREO-CLOUD: hostname: $name\$|the hostname is the seed's local-hostname"
        'VIREO-CLOUD: seed: config-disk \(/dev/vd[a-z]\)|cloud-init read its seed from the cidata disk'
        'VIREO-CLOUD: root: [0-9]+M on /dev/vda2|the root file system is up'
        'VIREO-CLOUD: powering off|runcmd finished')
reached=yes
for stage in "${stages[@]}"; do
    regex=${stage%|*} what=${stage##*|}
    if [ $reached = yes ] && wait_for "$regex"; then
        pass "$what after $(since)s: $(clean | grep -aoE -m1 -- "$regex" | head -1 | cut -c1-110)"
    elif [ $reached = yes ]; then
        reached=no
        if alive; then fail "$what: no '$regex' within ${timeout_s}s"
        else fail "$what: the VM ended after $(since)s before '$regex': $(why)"; fi
    else
        fail "$what: not reached"
    fi
done
if [ $reached = yes ]; then
    root_mib=$(clean | sed -n 's/.*VIREO-CLOUD: root: \([0-9]*\)M .*/\1/p' | head -1)
    if [ "${root_mib:-0}" -ge 3500 ]; then pass "the root file system grew to the ${disk_size} disk: ${root_mib} MiB (growpart, resize2fs)"
    else fail "the root file system has ${root_mib:-?} MiB: not grown to the ${disk_size} disk"; fi
    # Power-off: cloud-init's power_state, once its final stage is done.
    while alive && [ "$(date +%s)" -lt $(( deadline + 60 )) ]; do sleep 1; done
    if [ "$mode" = install ]; then
        ended=$(v domstate "$name" --reason 2>&1 | head -1)
        [ "$ended" = "shut off (shutdown)" ] && pass "the guest powered off after $(since)s: domstate '$ended'" ||
            fail "after power-off domstate says '$ended', wanted 'shut off (shutdown)': $(why)"
    elif alive; then fail "the VM still runs 60s past the deadline after runcmd finished"
    else wait "$vm_pid"; rc=$?; vm_pid=
        [ $rc -eq 0 ] && pass "the guest powered off after $(since)s: status 0" || fail "the VM ended with status $rc: $(why)"
    fi
fi
[ "$(stat -c '%s %Y' "$image")" = "$image_stamp" ] && pass "the backing image is untouched" ||
    fail "the backing image $image changed (size/mtime $image_stamp -> $(stat -c '%s %Y' "$image"))"
if [ "$mode" = install ]; then
    cp "$serial" "$log_dir/cloud-install-$stamp.serial" 2>/dev/null
    cp "$state/vms/$name/vireo-run.log" "$log_dir/cloud-install-$stamp.vireo-run.log" 2>/dev/null
    serial=$log_dir/cloud-install-$stamp.serial
fi
note "serial log kept: $serial"
if [ $reached = no ]; then note "last lines of the serial console:"; clean | tail -12 | awk '{ print "    | " $0 }'; fi
finish
