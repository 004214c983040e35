import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// QEMU's debugcon (isa-debugcon, port 0x402): firmware writes its diagnostic log one byte at a
/// time; a read returns 0xE9, which is how SeaBIOS and OVMF know someone listens (without the
/// device they skip their log, and its thousands of port exits). Bytes go to a file descriptor
/// the owner opened, at most `limit` of them: the guest decides how much it writes, the host's
/// disk must not fill up for it (SeaBIOS logs a few KiB per boot). The device keeps no state a
/// snapshot needs.
public final class DebugConsole: BusDevice {
    public static let defaultPort: UInt64 = 0x402
    public static let readback: UInt64 = 0xE9
    public static let defaultLimit = 16 << 20
    static let limitNote = Array("\n[vireo: firmware log limit reached; the rest is dropped]\n".utf8)

    private let fd: Int32
    private let remaining: Mutex<Int>

    /// `fd` stays the caller's: it must outlive the device.
    public init(fd: Int32, limit: Int = DebugConsole.defaultLimit) {
        self.fd = fd
        remaining = Mutex(limit)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { Self.readback }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        remaining.withLock { left in
            guard left > 0 else { return }
            left -= 1
            var byte = UInt8(truncatingIfNeeded: value)
            _ = Glibc.write(fd, &byte, 1)
            if left == 0 { _ = Self.limitNote.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
        }
    }
}
