import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A device's I/O thread: waits with poll(2) on its ioeventfds and backend fds (TAP, ...) and runs
/// the handler of whichever is readable. Each virtio device gets one, so its requests run off the
/// vCPU threads and never concurrently with themselves. Handlers must consume what woke them
/// (read the eventfd, drain the TAP) or disable their source, since poll is level-triggered.
final class IOThread: @unchecked Sendable {
    struct Source {
        let fd: Int32
        let handler: @Sendable () -> Void
        var enabled: Bool
    }

    let name: String
    private let sources = Mutex<[Source]>([])
    /// Wakes the thread to re-read the source list or to stop.
    private let wakeup: EventFD
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?

    init(name: String) throws {
        self.name = name
        wakeup = try EventFD()
    }

    /// Watches `fd`; returns the source's id.
    @discardableResult
    func add(fd: Int32, enabled: Bool = true, handler: @escaping @Sendable () -> Void) -> Int {
        let id = sources.withLock { sources in
            sources.append(Source(fd: fd, handler: handler, enabled: enabled))
            return sources.count - 1
        }
        wakeup.signal()
        return id
    }

    /// Told when a source is dropped because its fd reported an error or hang-up.
    var onSourceFailed: (@Sendable (Int32) -> Void)?

    private func disable(fd: Int32) {
        sources.withLock { sources in
            for index in sources.indices where sources[index].fd == fd { sources[index].enabled = false }
        }
    }

    /// Starts (or, after `stop`, restarts: a snapshot quiesces devices this way) the thread.
    func start() -> Bool {
        guard thread == nil else { return true }
        stopping.store(false, ordering: .releasing)
        thread = startThread(name: name) { [self] in loop() }
        return thread != nil
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func loop() {
        // Named like the device (vblk0, vnet0, ...): visible in top -H, and benchmarks find it by name.
        setCurrentThreadName(name)
        confineCurrentThread(as: .io)
        while !stopping.load(ordering: .acquiring) {
            let active = sources.withLock { $0.filter(\.enabled) }
            var fds = [pollfd(fd: wakeup.raw, events: Int16(POLLIN), revents: 0)]
            fds += active.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[0].revents != 0 { _ = wakeup.consume() }
            for (index, source) in active.enumerated() where fds[index + 1].revents != 0 {
                if stopping.load(ordering: .acquiring) { return }
                source.handler()
                // An fd in error (a TAP whose interface was deleted) stays "ready" forever: stop
                // watching it rather than spin; the device keeps its other sources.
                if fds[index + 1].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                    disable(fd: source.fd)
                    onSourceFailed?(source.fd)
                }
            }
        }
    }

    deinit { stop() }
}
