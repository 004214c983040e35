// sandbox-probe KIND CALL: confines itself as `vireo run` does, with a thread that already runs
// when privileges are dropped (as a restore's RAM thread does): no_new_privs, every thread's
// capabilities dropped, the control filter on every thread. The thread then narrows itself to
// KIND's filter and makes CALL. SandboxTests run it to see a forbidden call end the process with
// the violation report, and an allowed one go through. VIREO_SECCOMP=log|off changes the mode.
import CSandbox
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count == 3, let kind = ThreadKind(rawValue: arguments[1]) else {
    print("usage: sandbox-probe vcpu|io|control openat|socket|execve|write|fork")
    exit(2)
}

final class Probe: @unchecked Sendable {
    let kind: ThreadKind
    let call: String
    /// 0 started, 1 privileges dropped, 2 thread saw it, 3 process confined.
    let step = Atomic<Int>(0)
    var threadCapabilities: UInt64 = .max
    var result: Int = 0
    init(kind: ThreadKind, call: String) { self.kind = kind; self.call = call }

    func waitFor(_ value: Int) {
        var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        while step.load(ordering: .acquiring) < value { nanosleep(&pause, nil) }
    }

    func run() {
        _ = csandbox_set_thread_name("probe-\(kind.rawValue)")
        waitFor(1)
        threadCapabilities = Sandbox.effectiveCapabilities
        step.store(2, ordering: .releasing)
        waitFor(3)
        do { try Sandbox.confineCurrentThread(as: kind) } catch {
            print("confine thread: \(error)")
            exit(4)
        }
        switch call {
        case "openat": result = Int(open("/etc/hostname", O_RDONLY))
        case "socket": result = Int(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0))
        case "execve": result = Int(execv("/bin/true", [strdup("true"), nil]))
        case "fork": result = Int(fork())
        case "write": result = write(1, "written\n", 8)
        default: result = -2
        }
    }
}

/// Outside top-level code, whose closures the compiler ties to the main actor.
nonisolated func start(_ probe: Probe) -> pthread_t {
    var thread = pthread_t()
    let box = Unmanaged.passRetained(probe).toOpaque()
    pthread_create(&thread, nil, { raw in
        Unmanaged<Probe>.fromOpaque(raw!).takeRetainedValue().run()
        return nil
    }, box)
    return thread
}

Sandbox.prepare()
let probe = Probe(kind: kind, call: arguments[2])
let thread = start(probe)
let before = Sandbox.effectiveCapabilities
let capabilities: UInt64
do {
    try Sandbox.dropPrivileges()
    capabilities = Sandbox.effectiveCapabilities
    probe.step.store(1, ordering: .releasing)
    probe.waitFor(2)
    let mode = getenv("VIREO_SECCOMP").flatMap { SeccompMode(rawValue: String(cString: $0)) } ?? .enforce
    try Sandbox.confineProcess(mode: mode)
    probe.step.store(3, ordering: .releasing)
} catch {
    print("confine: \(error)")
    exit(3)
}
pthread_join(thread, nil)
print("\(probe.call) returned \(probe.result), capabilities \(capabilities) and \(probe.threadCapabilities)")
if getenv("SANDBOX_PROBE_BEFORE") != nil { print("before: \(before)") }
exit(0)
