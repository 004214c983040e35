import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A host TAP interface opened with a virtio-net header on every frame (IFF_VNET_HDR), non-blocking.
/// It lives here because the KVM module is the only one that imports the C shim, which holds the
/// fixed-arity ioctl wrappers; nothing in it is KVM-specific.
public final class TapInterface: Sendable {
    let fd: FileDescriptor
    public let name: String
    public var raw: Int32 { fd.raw }

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
        fd = FileDescriptor(raw)
        self.name = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        _ = try retryingEINTR("TUNSETVNETHDRSZ") { ckvm_tap_set_vnet_header_size(raw, vnetHeaderSize) }
    }

    /// Tells the TAP which offloads the guest accepted: the kernel then hands it partially
    /// checksummed / large segments described by the virtio-net header.
    public func setOffloads(_ offloads: Offloads) throws(KVMError) {
        _ = try retryingEINTR("TUNSETOFFLOAD") { ckvm_tap_set_offload(fd.raw, offloads.rawValue) }
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
        while true {
            let written = frame.withUnsafeBytes { write(fd.raw, $0.baseAddress, $0.count) }
            if written >= 0 { return true }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN { return false }
            throw KVMError.ioctlFailed("write to TAP \(name)", errno: err)
        }
    }

    /// Reads one frame (virtio-net header first) into a buffer of `maxLength`; nil when none waits.
    public func receive(maxLength: Int) throws(KVMError) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: maxLength)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
            if count >= 0 { return Array(buffer[0..<count]) }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN { return nil }
            throw KVMError.ioctlFailed("read from TAP \(name)", errno: err)
        }
    }
}
