import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// One entry of the VM's GSI routing table (KVM_SET_GSI_ROUTING).
public enum GSIRoute: Equatable, Sendable {
    public enum Chip: UInt32, Sendable { case picMaster = 0, picSlave = 1, ioapic = 2 }
    case irqchip(gsi: UInt32, chip: Chip, pin: UInt32)
    case msi(gsi: UInt32, address: UInt64, data: UInt32)

    public var gsi: UInt32 {
        switch self {
        case let .irqchip(gsi, _, _), let .msi(gsi, _, _): return gsi
        }
    }

    /// What KVM installs when the irqchip is created: ISA IRQs 0-15 on both PICs and the IOAPIC,
    /// GSIs 16-23 on the IOAPIC only. Replacing the table must keep these.
    public static let defaultIRQChipRoutes: [GSIRoute] = (0..<24).flatMap { gsi -> [GSIRoute] in
        var routes: [GSIRoute] = [.irqchip(gsi: UInt32(gsi), chip: .ioapic, pin: UInt32(gsi))]
        if gsi < 16 {
            routes.append(.irqchip(gsi: UInt32(gsi), chip: gsi < 8 ? .picMaster : .picSlave, pin: UInt32(gsi % 8)))
        }
        return routes
    }
}

/// Which address space an ioeventfd watches.
public enum IOEventSpace: Sendable { case mmio, pio }

extension VirtualMachine {
    /// Replaces the whole GSI routing table.
    public func setGSIRouting(_ routes: [GSIRoute]) throws(KVMError) {
        guard routes.count <= 4096, let table = ckvm_irq_routing_alloc(UInt32(routes.count)) else {
            throw KVMError.invalidArgument("GSI routing table of \(routes.count) entries is too large")
        }
        defer { free(table) }
        for (index, route) in routes.enumerated() {
            switch route {
            case let .irqchip(gsi, chip, pin):
                ckvm_irq_routing_set_irqchip(table, UInt32(index), gsi, chip.rawValue, pin)
            case let .msi(gsi, address, data):
                ckvm_irq_routing_set_msi(table, UInt32(index), gsi, address, data)
            }
        }
        _ = try retryingEINTR("KVM_SET_GSI_ROUTING") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_GSI_ROUTING, table) }
    }

    /// Makes a write to `event` inject GSI `gsi` in the kernel, with no VMM thread involved.
    public func attachIrqfd(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: event.raw)
        request.gsi = gsi
        _ = try retryingEINTR("KVM_IRQFD") { ckvm_ioctl_ptr(fd.raw, CKVM_IRQFD, &request) }
    }

    public func detachIrqfd(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: event.raw)
        request.gsi = gsi
        request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = try retryingEINTR("KVM_IRQFD") { ckvm_ioctl_ptr(fd.raw, CKVM_IRQFD, &request) }
    }

    /// Makes a guest write of `length` bytes at `address` signal `event` inside KVM instead of
    /// exiting to the vCPU thread (the write's value is dropped unless `dataMatch` filters on it).
    public func attachIoeventfd(_ event: EventFD, address: UInt64, length: UInt32, space: IOEventSpace = .mmio,
                                dataMatch: UInt64? = nil) throws(KVMError) {
        var request = ioeventfdRequest(event, address: address, length: length, space: space, dataMatch: dataMatch)
        _ = try retryingEINTR("KVM_IOEVENTFD") { ckvm_ioctl_ptr(fd.raw, CKVM_IOEVENTFD, &request) }
    }

    public func detachIoeventfd(_ event: EventFD, address: UInt64, length: UInt32, space: IOEventSpace = .mmio,
                                dataMatch: UInt64? = nil) throws(KVMError) {
        var request = ioeventfdRequest(event, address: address, length: length, space: space, dataMatch: dataMatch)
        request.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_deassign)
        _ = try retryingEINTR("KVM_IOEVENTFD") { ckvm_ioctl_ptr(fd.raw, CKVM_IOEVENTFD, &request) }
    }

    private func ioeventfdRequest(_ event: EventFD, address: UInt64, length: UInt32, space: IOEventSpace,
                                  dataMatch: UInt64?) -> kvm_ioeventfd {
        var request = kvm_ioeventfd()
        request.fd = event.raw
        request.addr = address
        request.len = length
        if space == .pio { request.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_pio) }
        if let dataMatch {
            request.datamatch = dataMatch
            request.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_datamatch)
        }
        return request
    }
}
