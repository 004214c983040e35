/// An MSI write: the address/data pair the guest programmed in an MSI-X table entry.
public struct MSIMessage: Equatable, Sendable, Codable {
    public var address: UInt64
    public var data: UInt32

    public init(address: UInt64, data: UInt32) {
        self.address = address
        self.data = data
    }
}

/// Where MSI-X vectors go. The VMM implements it with KVM GSI routing + irqfd; tests record.
/// Devices call it with their own lock held (so routes and triggers stay ordered): implementations
/// must not call back into the device.
public protocol MSIXInterruptController: Sendable {
    /// Vector `vector` of `device` now routes to `message`, or nowhere (nil: masked, function-masked or MSI-X disabled).
    func route(device: PCIDeviceAddress, vector: Int, message: MSIMessage?)
    /// Deliver vector `vector` of `device` (it is routed and unmasked when this is called).
    func trigger(device: PCIDeviceAddress, vector: Int)
}

/// Something the MSI-X table asks its owner to do to the controller, in order.
public enum MSIXEffect: Equatable, Sendable {
    case route(vector: Int, message: MSIMessage?)
    case trigger(vector: Int)
}

extension MSIXInterruptController {
    /// Applies `effects` in order for `device`.
    public func apply(_ effects: [MSIXEffect], device: PCIDeviceAddress) {
        for effect in effects {
            switch effect {
            case let .route(vector, message): route(device: device, vector: vector, message: message)
            case let .trigger(vector): trigger(device: device, vector: vector)
            }
        }
    }
}
