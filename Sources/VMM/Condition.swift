import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// A mutex-protected value with a condition variable, for the few places threads must wait for one
/// another (vCPU parking, machine exit, a server draining its requests, a progress line's poll).
/// Mutual exclusion alone is `Mutex` (Synchronization); this is the project's one type for waiting
/// on a change. Kept tiny on purpose: no Foundation on the exit path.
package final class Guarded<Value>: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var value: Value

    package init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// Mutates the value and wakes every waiter.
    package func update<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
        }
        return try body(&value)
    }

    package func read<R>(_ body: (Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(value)
    }

    /// Waits until `predicate` holds (or the timeout passes), then runs `body` under the lock.
    /// Returns nil on timeout.
    package func wait<R>(until predicate: (Value) -> Bool, timeoutSeconds: Double? = nil, then body: (inout Value) -> R) -> R? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        var deadline = timespec()
        if let timeout = timeoutSeconds {
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            let nanos = Int(deadline.tv_nsec) + Int(timeout.truncatingRemainder(dividingBy: 1) * 1e9)
            deadline.tv_sec += Int(timeout) + nanos / 1_000_000_000
            deadline.tv_nsec = nanos % 1_000_000_000
        }
        while !predicate(value) {
            if timeoutSeconds != nil {
                if pthread_cond_timedwait(&condition, &mutex, &deadline) == ETIMEDOUT, !predicate(value) { return nil }
            } else {
                pthread_cond_wait(&condition, &mutex)
            }
        }
        let result = body(&value)
        pthread_cond_broadcast(&condition)
        return result
    }
}

/// Starts a joinable OS thread running `body` (vCPUs need real threads, not tasks: KVM_RUN blocks).
func startThread(name: String, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    if result != 0 {
        Unmanaged<AnyObject>.fromOpaque(box).release()
        return nil
    }
    return thread
}

/// A value made on a thread of its own while the caller does something else; `wait` joins the
/// thread and returns the value or rethrows its error. (Run inline if no thread can be started.)
final class Background<Value: Sendable>: @unchecked Sendable {
    private var result: Result<Value, any Error>?
    private var thread: pthread_t?

    init(name: String, _ body: @escaping @Sendable () throws -> Value) {
        thread = startThread(name: name) { [self] in result = Result { try body() } }
        if thread == nil { result = Result { try body() } }
    }

    /// Call from one thread only.
    func wait() throws -> Value {
        if let running = thread {
            pthread_join(running, nil)
            thread = nil
        }
        return try result!.get()
    }
}

/// Narrows the calling thread to its kind's seccomp filter when the process confines itself
/// (`vireo run`); a thread that cannot be confined must not run guest work unconfined, so the
/// process ends with the reason.
func confineCurrentThread(as kind: ThreadKind) {
    do {
        try Sandbox.confineCurrentThread(as: kind)
    } catch {
        let line = Array("vireo: error: \(error)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        _exit(1)
    }
}
