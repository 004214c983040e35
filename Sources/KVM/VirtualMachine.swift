import CKVM
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A KVM virtual machine file descriptor.
public final class VirtualMachine: Sendable {
    let fd: FileDescriptor
    public let system: KVMSystem

    init(fd: FileDescriptor, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// x86 requires a three-page TSS region and an identity-map page for real-mode emulation on
    /// Intel; both must lie outside guest RAM. Call before creating vCPUs.
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try retryingEINTR("KVM_SET_TSS_ADDR") { ckvm_ioctl_int(fd.raw, CKVM_SET_TSS_ADDR, UInt(address)) }
    }

    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var value = address
        _ = try retryingEINTR("KVM_SET_IDENTITY_MAP_ADDR") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_IDENTITY_MAP_ADDR, &value) }
    }

    /// In-kernel PIC, IOAPIC and per-vCPU LAPICs.
    public func createIRQChip() throws(KVMError) {
        _ = try retryingEINTR("KVM_CREATE_IRQCHIP") { ckvm_ioctl_none(fd.raw, CKVM_CREATE_IRQCHIP) }
    }

    /// In-kernel i8254 PIT (and the port 0x61 speaker stub).
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try retryingEINTR("KVM_CREATE_PIT2") { ckvm_ioctl_ptr(fd.raw, CKVM_CREATE_PIT2, &config) }
    }

    /// Maps host memory into the guest's physical address space.
    ///
    /// This is the one unsafe entry point of the module: `hostAddress` must stay mapped for `size`
    /// bytes for as long as the slot exists (GuestMemory guarantees this for its regions).
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt,
                                    readOnly: Bool = false, logDirtyPages: Bool = false) throws(KVMError) {
        var region = kvm_userspace_memory_region()
        region.slot = slot
        region.flags = (readOnly ? UInt32(KVM_MEM_READONLY) : 0) | (logDirtyPages ? UInt32(KVM_MEM_LOG_DIRTY_PAGES) : 0)
        region.guest_phys_addr = guestAddress
        region.memory_size = size
        region.userspace_addr = UInt64(hostAddress)
        _ = try retryingEINTR("KVM_SET_USER_MEMORY_REGION") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_USER_MEMORY_REGION, &region) }
    }

    /// The pages of memory slot `slot` (`pageCount` 4 KiB pages, registered with
    /// `logDirtyPages`) written since the last call, as a bitmap of 64-bit words, bit i = page i;
    /// KVM clears the log as it hands it over (KVM_GET_DIRTY_LOG). The ground for pre-copy
    /// migration: each round sends what the guest dirtied during the previous one.
    public func takeDirtyLog(slot: UInt32, pageCount: Int) throws(KVMError) -> [UInt64] {
        var bitmap = [UInt64](repeating: 0, count: (pageCount + 63) / 64)
        let descriptor = fd.raw
        let failure: Int32 = bitmap.withUnsafeMutableBytes { raw in
            var log = kvm_dirty_log()
            log.slot = slot
            log.dirty_bitmap = raw.baseAddress
            while ckvm_ioctl_ptr(descriptor, CKVM_GET_DIRTY_LOG, &log) < 0 {
                if errno != EINTR { return errno }
            }
            return 0
        }
        guard failure == 0 else { throw KVMError.ioctlFailed("KVM_GET_DIRTY_LOG", errno: failure) }
        return bitmap
    }

    /// Drives an interrupt line (GSI) of the in-kernel irqchip to `level`.
    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = irq
        line.level = level ? 1 : 0
        _ = try retryingEINTR("KVM_IRQ_LINE") { ckvm_ioctl_ptr(fd.raw, CKVM_IRQ_LINE, &line) }
    }

    /// Creates vCPU `id` (its initial LAPIC id).
    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let raw = try retryingEINTR("KVM_CREATE_VCPU") { ckvm_ioctl_int(fd.raw, CKVM_CREATE_VCPU, UInt(id)) }
        let descriptor = FileDescriptor(raw)
        let size = try system.vcpuMmapSize
        guard let map = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0), map != MAP_FAILED else {
            throw KVMError.mmapFailed(errno: errno)
        }
        return VCPU(id: id, fd: descriptor, run: map, runSize: size)
    }

    // MARK: VM-wide state for snapshots

    /// Captures the in-kernel PIC master/slave and IOAPIC, PIT and kvmclock as opaque byte blobs.
    public func captureState() throws(KVMError) -> VMPlatformState {
        var chips: [[UInt8]] = []
        for chipID in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC] {
            var chip = kvm_irqchip()
            chip.chip_id = UInt32(chipID)
            _ = try retryingEINTR("KVM_GET_IRQCHIP") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_IRQCHIP, &chip) }
            chips.append(withUnsafeBytes(of: &chip) { Array($0) })
        }
        var pit = kvm_pit_state2()
        _ = try retryingEINTR("KVM_GET_PIT2") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_PIT2, &pit) }
        var clock = kvm_clock_data()
        _ = try retryingEINTR("KVM_GET_CLOCK") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_CLOCK, &clock) }
        return VMPlatformState(irqchips: chips, pit: withUnsafeBytes(of: &pit) { Array($0) }, clock: clock.clock)
    }

    /// Restores what `captureState` produced; blob sizes are validated first.
    public func restoreState(_ state: VMPlatformState) throws(KVMError) {
        guard state.irqchips.count == 3, state.irqchips.allSatisfy({ $0.count == MemoryLayout<kvm_irqchip>.size }),
              state.pit.count == MemoryLayout<kvm_pit_state2>.size else {
            throw KVMError.invalidArgument("platform state has the wrong shape for this KVM")
        }
        for blob in state.irqchips {
            var chip = kvm_irqchip()
            withUnsafeMutableBytes(of: &chip) { $0.copyBytes(from: blob) }
            _ = try retryingEINTR("KVM_SET_IRQCHIP") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_IRQCHIP, &chip) }
        }
        var pit = kvm_pit_state2()
        withUnsafeMutableBytes(of: &pit) { $0.copyBytes(from: state.pit) }
        _ = try retryingEINTR("KVM_SET_PIT2") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_PIT2, &pit) }
        var clock = kvm_clock_data()
        clock.clock = state.clock
        _ = try retryingEINTR("KVM_SET_CLOCK") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_CLOCK, &clock) }
    }
}

/// In-kernel platform device state, as plain Codable values.
public struct VMPlatformState: Codable, Equatable, Sendable {
    public var irqchips: [[UInt8]]
    public var pit: [UInt8]
    public var clock: UInt64

    // Blobs as Data (base64 in JSON), as in VCPUState.
    enum CodingKeys: String, CodingKey { case irqchips, pit, clock }

    public init(irqchips: [[UInt8]], pit: [UInt8], clock: UInt64) {
        self.irqchips = irqchips; self.pit = pit; self.clock = clock
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        irqchips = try c.decode([Data].self, forKey: .irqchips).map { Array($0) }
        pit = Array(try c.decode(Data.self, forKey: .pit))
        clock = try c.decode(UInt64.self, forKey: .clock)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(irqchips.map { Data($0) }, forKey: .irqchips)
        try c.encode(Data(pit), forKey: .pit)
        try c.encode(clock, forKey: .clock)
    }
}
