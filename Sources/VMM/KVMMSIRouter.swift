import Devices
import KVM
import Synchronization

/// MSI-X delivery through KVM: every (device, vector) the guest programs gets its own GSI with an
/// MSI route and an irqfd, so a device thread raises an interrupt with one eventfd write and the
/// kernel injects it (no vCPU exit, no VMM lock on the vCPU path).
final class KVMMSIRouter: MSIXInterruptController, @unchecked Sendable {
    struct VectorKey: Hashable { let device: PCIDeviceAddress; let vector: Int }
    struct Vector {
        let gsi: UInt32
        let doorbell: EventFD
        var message: MSIMessage?
    }

    /// GSIs 0-23 belong to the IOAPIC pins.
    static let firstMSIGSI: UInt32 = 24
    /// KVM_MAX_IRQ_ROUTES is 4096; stay clear of it.
    static let maximumVectors = 2048

    private let vm: VirtualMachine
    private let vectors = Mutex<[VectorKey: Vector]>([:])
    /// Routing changes are rare (driver setup); serialized so tables are installed in order.
    private let routingLock = Mutex<Void>(())
    private let onError: @Sendable (String) -> Void

    init(vm: VirtualMachine, onError: @escaping @Sendable (String) -> Void) {
        self.vm = vm
        self.onError = onError
    }

    func route(device: PCIDeviceAddress, vector: Int, message: MSIMessage?) {
        routingLock.withLock { _ in
            let key = VectorKey(device: device, vector: vector)
            let (routes, newVector): ([GSIRoute], Vector?) = vectors.withLock { vectors in
                var created: Vector?
                if vectors[key] == nil {
                    guard message != nil, vectors.count < Self.maximumVectors,
                          let doorbell = try? EventFD() else { return ([], nil) }
                    let vectorEntry = Vector(gsi: Self.firstMSIGSI + UInt32(vectors.count), doorbell: doorbell, message: nil)
                    vectors[key] = vectorEntry
                    created = vectorEntry
                }
                guard vectors[key]?.message != message || created != nil else { return ([], nil) }
                vectors[key]?.message = message
                let msiRoutes = vectors.values.compactMap { entry -> GSIRoute? in
                    entry.message.map { .msi(gsi: entry.gsi, address: $0.address, data: $0.data) }
                }
                return (GSIRoute.defaultIRQChipRoutes + msiRoutes.sorted { $0.gsi < $1.gsi }, created)
            }
            guard !routes.isEmpty else { return }
            do {
                try vm.setGSIRouting(routes)
                if let newVector { try vm.attachIrqfd(newVector.doorbell, gsi: newVector.gsi) }
            } catch {
                onError("MSI-X routing for \(device) vector \(vector) failed: \(error)")
            }
        }
    }

    func trigger(device: PCIDeviceAddress, vector: Int) {
        let doorbell = vectors.withLock { vectors -> EventFD? in
            guard let entry = vectors[VectorKey(device: device, vector: vector)], entry.message != nil else { return nil }
            return entry.doorbell
        }
        doorbell?.signal()
    }
}
