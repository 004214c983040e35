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
///
/// The guest's bytes arrive on vCPU threads, whose seccomp filter allows no rename or open: a
/// thread of the log's own (under the process-wide filter) does the rotation while the writer
/// waits for it, so the files split exactly at the limit. A byte costs one uncontended lock; only
/// a rotation wakes the rotator (waking it per byte slowed a chatty guest's console to a crawl).
public final class RotatingFileOutput: SerialOutput, @unchecked Sendable {
    private struct State { var fd: Int32; var written: UInt64 }
    /// The file and its size, shared with the rotator thread.
    private final class File: Sendable {
        let state: Mutex<State>
        init(_ state: State) { self.state = Mutex(state) }
    }
    private enum Phase { case idle, requested, finished }
    private struct Rotation { var phase = Phase.idle; var stopping = false }
    private let limit: UInt64
    private let file: File
    private let rotation = Guarded(Rotation())
    private var rotator: pthread_t?

    /// `fd` is `path` opened for appending; what it holds already counts towards the limit.
    public init(path: String, fd: Int32, limit: UInt64) {
        var info = stat()
        let existing = fstat(fd, &info) == 0 ? UInt64(max(0, info.st_size)) : 0
        self.limit = max(limit, 1)
        let file = File(State(fd: fd, written: existing))
        self.file = file
        rotator = startThread(name: "vireo-log") { [rotation] in Self.rotate(rotation, file, path: path) }
    }

    deinit {
        rotation.update { $0.stopping = true }
        if let rotator { pthread_join(rotator, nil) }
    }

    public func emit(_ byte: UInt8) {
        if !write(byte) {
            rotation.update { if $0.phase == .idle { $0.phase = .requested } }
            // (a failed or stalled rotation is tried again a limit later, not per byte)
            _ = rotation.wait(until: { $0.phase != .requested || $0.stopping }, timeoutSeconds: 5) { $0.phase = .idle }
            file.state.withLock { $0.written = 0 }
            _ = write(byte)
        }
    }

    /// Appends the byte unless the file is full; false when it is (nothing written then).
    private func write(_ byte: UInt8) -> Bool {
        file.state.withLock { state in
            guard state.written < limit else { return false }
            var value = byte
            while Glibc.write(state.fd, &value, 1) < 0 && errno == EINTR {}
            state.written += 1
            return true
        }
    }

    /// The rotator thread: moves the full file aside and opens a new one when asked; on any
    /// failure the log goes on where it was.
    private static func rotate(_ rotation: Guarded<Rotation>, _ file: File, path: String) {
        while rotation.wait(until: { $0.phase == .requested || $0.stopping }, then: { !$0.stopping }) == true {
            var fresh: Int32 = -1
            if rename(path, path + ".1") == 0 { fresh = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640) }
            if fresh >= 0 {
                file.state.withLock { state in
                    close(state.fd)
                    state.fd = fresh
                }
            }
            rotation.update { $0.phase = .finished }
        }
    }
}

/// The same output to several places (terminal and log file).
public struct TeeOutput: SerialOutput {
    public let sinks: [any SerialOutput]
    public init(sinks: [any SerialOutput]) { self.sinks = sinks }
    public func emit(_ byte: UInt8) { for sink in sinks { sink.emit(byte) } }
}
