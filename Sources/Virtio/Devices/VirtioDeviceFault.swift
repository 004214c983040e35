/// Why a device stopped serving a queue: the driver broke the protocol, so the device sets
/// DEVICE_NEEDS_RESET (§2.1.2) and leaves the queue alone until the driver resets it.
public enum VirtioDeviceFault: Error, Equatable, Sendable, CustomStringConvertible {
    /// The ring or a descriptor chain was invalid.
    case queue(index: Int, VirtqueueError)
    /// A chain was well formed but could not carry the device's request (no header, no status byte).
    case malformedRequest(queue: Int, String)

    public var description: String {
        switch self {
        case let .queue(index, error): return "queue \(index): \(error)"
        case let .malformedRequest(queue, why): return "queue \(queue): \(why)"
        }
    }
}

/// A request the device cannot even answer (thrown by request handlers, mapped to a fault).
struct MalformedRequest: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}
