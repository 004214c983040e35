#if canImport(Glibc)
import Glibc
#endif

/// QEMU's debugcon (isa-debugcon, port 0x402): firmware writes its diagnostic log one byte at a
/// time; a read returns 0xE9, which is how SeaBIOS and OVMF know someone listens (without the
/// device they skip their log, and its thousands of port exits). Bytes go to a file descriptor
/// the owner opened; the device keeps no state a snapshot needs.
public final class DebugConsole: BusDevice {
    public static let defaultPort: UInt64 = 0x402
    public static let readback: UInt64 = 0xE9

    private let fd: Int32

    /// `fd` stays the caller's: it must outlive the device.
    public init(fd: Int32) { self.fd = fd }

    public func read(offset: UInt64, size: Int) -> UInt64 { Self.readback }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        var byte = UInt8(truncatingIfNeeded: value)
        _ = Glibc.write(fd, &byte, 1)
    }
}
