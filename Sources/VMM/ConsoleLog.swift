import Devices
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// COM1's output, fanned out: forwarded to the terminal (or nowhere), kept in a bounded ring so a
/// client attaching later sees recent output, and streamed to any number of live subscribers.
public final class ConsoleLog: SerialOutput, @unchecked Sendable {
    public typealias Subscriber = @Sendable (UInt8) -> Void

    private struct State {
        var ring: [UInt8]
        var start = 0
        var count = 0
        var subscribers: [Int: Subscriber] = [:]
        var nextID = 0
    }

    public let capacity: Int
    private let forward: (any SerialOutput)?
    private let state: Guarded<State>

    /// - Parameters:
    ///   - capacity: bytes of recent output kept (older output is dropped, never the VMM's memory).
    ///   - forward: where output also goes as it is produced (the terminal), if anywhere.
    public init(capacity: Int = 64 << 10, forwardingTo forward: (any SerialOutput)? = nil) {
        self.capacity = max(1, capacity)
        self.forward = forward
        state = Guarded(State(ring: [UInt8](repeating: 0, count: max(1, capacity))))
    }

    public func emit(_ byte: UInt8) {
        forward?.emit(byte)
        let subscribers = state.update { state -> [Subscriber] in
            let end = (state.start + state.count) % capacity
            state.ring[end] = byte
            if state.count == capacity { state.start = (state.start + 1) % capacity } else { state.count += 1 }
            return state.subscribers.isEmpty ? [] : Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber(byte) }
    }

    /// The recent output, oldest first (at most `capacity` bytes).
    public func recent() -> [UInt8] {
        state.read { state in
            (0..<state.count).map { state.ring[(state.start + $0) % capacity] }
        }
    }

    /// Atomically returns the recent output and registers `subscriber` for everything after it,
    /// so an attaching client neither misses nor repeats a byte.
    public func attach(_ subscriber: @escaping Subscriber) -> (id: Int, recent: [UInt8]) {
        state.update { state in
            let recent = (0..<state.count).map { state.ring[(state.start + $0) % capacity] }
            let id = state.nextID
            state.nextID += 1
            state.subscribers[id] = subscriber
            return (id, recent)
        }
    }

    public func detach(_ id: Int) {
        state.update { _ = $0.subscribers.removeValue(forKey: id) }
    }
}

/// Serial output to a file descriptor (the terminal, a log file), written as the guest produces it.
public struct FileDescriptorOutput: SerialOutput {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }
    public func emit(_ byte: UInt8) {
        var value = byte
        while write(fd, &value, 1) < 0 && errno == EINTR {}
    }
}

/// A log file that is rotated when it reaches `limit` bytes: renamed to `<path>.1` (replacing an
/// older one) and started afresh, like virtlogd's logs: at most about twice the limit on disk.
public final class RotatingFileOutput: SerialOutput, @unchecked Sendable {
    private struct State { var fd: Int32; var written: UInt64 }
    private let path: String
    private let limit: UInt64
    private let state: Mutex<State>

    /// `fd` is `path` opened for appending; what it holds already counts towards the limit.
    public init(path: String, fd: Int32, limit: UInt64) {
        var info = stat()
        let existing = fstat(fd, &info) == 0 ? UInt64(max(0, info.st_size)) : 0
        self.path = path
        self.limit = max(limit, 1)
        self.state = Mutex(State(fd: fd, written: existing))
    }

    public func emit(_ byte: UInt8) {
        state.withLock { state in
            if state.written >= limit {
                rotate(&state)
                state.written = 0   // (a failed rotation is tried again a limit later, not per byte)
            }
            var value = byte
            while write(state.fd, &value, 1) < 0 && errno == EINTR {}
            state.written += 1
        }
    }

    /// Moves the full file aside and opens a new one; on any failure it writes on where it was.
    private func rotate(_ state: inout State) {
        guard rename(path, path + ".1") == 0 else { return }
        let fresh = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fresh >= 0 else { return }
        close(state.fd)
        state.fd = fresh
    }
}

/// The same output to several places (terminal and log file).
public struct TeeOutput: SerialOutput {
    public let sinks: [any SerialOutput]
    public init(sinks: [any SerialOutput]) { self.sinks = sinks }
    public func emit(_ byte: UInt8) { for sink in sinks { sink.emit(byte) } }
}
