import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A userfaultfd(2) descriptor in "missing" mode: a thread touching a registered page that has
/// never been filled (the vCPU through KVM, or the VMM's own device code) sleeps until another
/// thread fills it with `copy` or `zeroPage`. What post-copy migration pulls pages in with.
public final class UserFaultDescriptor: @unchecked Sendable {
    public let fd: Int32

    public init() throws(KVMError) {
        let result = ckvm_uffd_open()
        guard result >= 0 else { throw KVMError.ioctlFailed("userfaultfd", errno: -result) }
        fd = result
    }

    deinit { close(fd) }

    /// Faults on missing pages of [start, start + length) are reported from now on.
    public func registerMissing(start: UInt, length: UInt64) throws(KVMError) {
        let result = ckvm_uffd_register_missing(fd, UInt64(start), length)
        guard result == 0 else { throw KVMError.ioctlFailed("UFFDIO_REGISTER", errno: -result) }
    }

    /// Fills missing pages from `source` and wakes whoever waits on them. False when a page of the
    /// range was already there (nothing changed then).
    @discardableResult
    public func copy(to destination: UInt, from source: UnsafeRawPointer, length: UInt64) throws(KVMError) -> Bool {
        let result = ckvm_uffd_copy(fd, UInt64(destination), source, length)
        if result == -EEXIST { return false }
        guard result == 0 else { throw KVMError.ioctlFailed("UFFDIO_COPY", errno: -result) }
        return true
    }

    /// Fills missing pages with zeros; false when they were already there.
    @discardableResult
    public func zeroPage(at destination: UInt, length: UInt64) throws(KVMError) -> Bool {
        let result = ckvm_uffd_zeropage(fd, UInt64(destination), length)
        if result == -EEXIST { return false }
        guard result == 0 else { throw KVMError.ioctlFailed("UFFDIO_ZEROPAGE", errno: -result) }
        return true
    }

    /// Faults on the range are ordinary page faults again (missing pages read as zeros).
    public func unregister(start: UInt, length: UInt64) throws(KVMError) {
        let result = ckvm_uffd_unregister(fd, UInt64(start), length)
        guard result == 0 else { throw KVMError.ioctlFailed("UFFDIO_UNREGISTER", errno: -result) }
    }

    public func wake(start: UInt, length: UInt64) {
        _ = ckvm_uffd_wake(fd, UInt64(start), length)
    }

    public enum Event: Equatable, Sendable {
        case fault(address: UInt64)
        case other
    }

    /// The next event if one is pending (the descriptor never blocks; poll it for readability).
    public func nextEvent() throws(KVMError) -> Event? {
        var address: UInt64 = 0
        let result = ckvm_uffd_read_fault(fd, &address)
        switch result {
        case 0: return nil
        case 1: return .fault(address: address)
        case 2: return .other
        default: throw KVMError.ioctlFailed("read(userfaultfd)", errno: -result)
        }
    }

    /// Waits until an event is pending or `timeoutMilliseconds` pass; true when one is.
    public func waitReadable(timeoutMilliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, timeoutMilliseconds) > 0
    }
}
