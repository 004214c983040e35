# Sourced by benchmarks/vmm/run.sh and benchmarks/vmm/nested-boot.sh: the `-cpu` value QEMU+KVM
# can start with on this machine.
#
# QEMU 7.2's `-cpu host` aborts at once on some hosts' kernels ("error: failed to set MSR 0x10a
# to 0x69", then an assertion in kvm_buf_set_msrs): that KVM refuses the IA32_ARCH_CAPABILITIES
# value QEMU derives from the host. `host,-arch-capabilities` drops only that MSR/CPUID bit and
# keeps every other host feature, so the guest sees the same CPU otherwise.
#
# qemu_cpu_pick: sets QEMU_CPU (the -cpu value to use) and QEMU_CPU_NOTE (one line saying why).
qemu_cpu_pick() {
    # -S stops before the first guest instruction, but QEMU has already put the vCPUs' registers
    # (the MSRs included) into KVM; "quit" on the monitor then ends it cleanly. No sleep to guess.
    local probe=(-accel kvm -M microvm -nodefaults -no-user-config -display none -S -monitor stdio)
    local out status
    out=$(echo quit | timeout 60 qemu-system-x86_64 -cpu host "${probe[@]}" 2>&1) && status=0 || status=$?
    if [ "$status" = 0 ]; then
        QEMU_CPU=host
        QEMU_CPU_NOTE="-cpu host (probe: QEMU starts with it)"
        return 0
    fi
    if grep -q "failed to set MSR 0x10a" <<<"$out"; then
        if echo quit | timeout 60 qemu-system-x86_64 -cpu host,-arch-capabilities "${probe[@]}" >/dev/null 2>&1; then
            QEMU_CPU=host,-arch-capabilities
            QEMU_CPU_NOTE="-cpu host,-arch-capabilities (fallback: -cpu host aborts here with 'failed to set MSR 0x10a', IA32_ARCH_CAPABILITIES)"
            return 0
        fi
        QEMU_CPU=host
        QEMU_CPU_NOTE="-cpu host (aborts here with 'failed to set MSR 0x10a', and host,-arch-capabilities failed too: QEMU rows will fail)"
        return 0
    fi
    QEMU_CPU=host
    QEMU_CPU_NOTE="-cpu host (probe ended with status $status: $(grep -m1 -i 'error' <<<"$out" || echo 'no error line'))"
}
