public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    /// The range [address, address+length) is not fully backed by guest RAM.
    case outOfRange(address: GuestAddress, length: UInt64)
    /// Regions overlap, are empty, or are not page aligned.
    case invalidLayout(String)
    /// The host refused to allocate the backing memory.
    case allocationFailed(size: UInt64, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfRange(address, length):
            return "guest memory access at \(address) of \(length) bytes is outside guest RAM"
        case let .invalidLayout(why):
            return "invalid guest memory layout: \(why)"
        case let .allocationFailed(size, errno):
            return "cannot allocate \(size) bytes of guest memory (errno \(errno))"
        }
    }
}
