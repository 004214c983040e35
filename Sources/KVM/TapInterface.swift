import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A host TAP interface opened with a virtio-net header on every frame (IFF_VNET_HDR), non-blocking.
/// It lives here because the KVM module is the only one that imports the C shim, which holds the
/// fixed-arity ioctl wrappers; nothing in it is KVM-specific.
public final class TapInterface: Sendable {
    /// -1 once closed: a VM that reboots in place must release the TAP before its next boot
    /// attaches to it again (a single-queue TAP takes one owner).
    private let descriptor: Mutex<Int32>
    public let name: String
    public var raw: Int32 { descriptor.withLock { $0 } }

    /// TUN_F_* offload flags for `setOffloads`.
    public struct Offloads: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let checksum = Offloads(rawValue: CKVM_TUN_F_CSUM)
        public static let tso4 = Offloads(rawValue: CKVM_TUN_F_TSO4)
        public static let tso6 = Offloads(rawValue: CKVM_TUN_F_TSO6)
        public static let tsoECN = Offloads(rawValue: CKVM_TUN_F_TSO_ECN)
    }

    /// Opens TAP `name`, creating it when it does not exist (which needs CAP_NET_ADMIN).
    public init(name: String, vnetHeaderSize: Int32 = 12) throws(KVMError) {
        var actual = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        let raw = ckvm_tap_open(name, &actual)
        guard raw >= 0 else {
            let err = errno
            if err == EPERM || err == EACCES {
                throw KVMError.invalidArgument("cannot open or create TAP '\(name)': permission denied (needs CAP_NET_ADMIN, or a TAP created beforehand with 'ip tuntap add \(name) mode tap user $USER')")
            }
            if err == ENOENT || err == ENODEV {
                throw KVMError.invalidArgument("cannot open TAP '\(name)': /dev/net/tun is missing (modprobe tun)")
            }
            throw KVMError.ioctlFailed("TUNSETIFF \(name)", errno: err)
        }
        descriptor = Mutex(raw)
        self.name = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        _ = try retryingEINTR("TUNSETVNETHDRSZ") { ckvm_tap_set_vnet_header_size(raw, vnetHeaderSize) }
    }

    /// Releases the TAP (idempotent); later sends and receives fail.
    public func close() {
        descriptor.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    deinit { close() }

    /// Tells the TAP which offloads the guest accepted: the kernel then hands it partially
    /// checksummed / large segments described by the virtio-net header.
    public func setOffloads(_ offloads: Offloads) throws(KVMError) {
        _ = try retryingEINTR("TUNSETOFFLOAD") { ckvm_tap_set_offload(raw, offloads.rawValue) }
    }

    /// Brings the interface up (needs CAP_NET_ADMIN).
    public func bringUp() throws(KVMError) {
        _ = try retryingEINTR("SIOCSIFFLAGS \(name) up") { ckvm_interface_up(name) }
    }

    /// Adds the interface to Linux bridge `bridge` (needs CAP_NET_ADMIN).
    public func attach(toBridge bridge: String) throws(KVMError) {
        let result = ckvm_bridge_add_interface(bridge, name)
        guard result >= 0 else {
            let err = errno
            if err == EPERM { throw KVMError.invalidArgument("cannot add '\(name)' to bridge '\(bridge)': permission denied (needs CAP_NET_ADMIN)") }
            if err == ENODEV || err == EINVAL { throw KVMError.invalidArgument("cannot add '\(name)' to bridge '\(bridge)': no such bridge") }
            throw KVMError.ioctlFailed("SIOCBRADDIF \(bridge)", errno: err)
        }
    }

    /// Writes one frame (virtio-net header first); false when the TAP queue is full.
    public func send(_ frame: [UInt8]) throws(KVMError) -> Bool {
        let fd = raw
        guard fd >= 0 else { throw KVMError.invalidArgument("TAP \(name) is closed") }
        while true {
            let written = frame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written >= 0 { return true }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN { return false }
            throw KVMError.ioctlFailed("write to TAP \(name)", errno: err)
        }
    }

    /// Reads one frame (virtio-net header first) into a buffer of `maxLength`; nil when none waits.
    public func receive(maxLength: Int) throws(KVMError) -> [UInt8]? {
        let fd = raw
        guard fd >= 0 else { throw KVMError.invalidArgument("TAP \(name) is closed") }
        var buffer = [UInt8](repeating: 0, count: maxLength)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count >= 0 { return Array(buffer[0..<count]) }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN { return nil }
            throw KVMError.ioctlFailed("read from TAP \(name)", errno: err)
        }
    }
}
