import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd(2) counter: the doorbell between KVM (irqfd, ioeventfd) and our device threads.
/// Non-blocking; closed in deinit.
public final class EventFD: Sendable {
    let fd: FileDescriptor
    public var raw: Int32 { fd.raw }

    public init() throws(KVMError) {
        let raw = ckvm_eventfd()
        guard raw >= 0 else { throw KVMError.ioctlFailed("eventfd", errno: errno) }
        fd = FileDescriptor(raw)
    }

    /// Adds 1 to the counter (wakes the reader / injects the irqfd's interrupt).
    public func signal() {
        var one: UInt64 = 1
        while write(fd.raw, &one, 8) < 0 && errno == EINTR {}
    }

    /// Reads and resets the counter; nil when it was zero.
    public func consume() -> UInt64? {
        var value: UInt64 = 0
        while true {
            let count = read(fd.raw, &value, 8)
            if count == 8 { return value }
            if count < 0 && errno == EINTR { continue }
            return nil
        }
    }
}

/// Names the calling thread (15 bytes at most), as shown by top -H and /proc/PID/task/TID/comm.
public func setCurrentThreadName(_ name: String) {
    _ = ckvm_set_thread_name(String(name.prefix(15)))
}
