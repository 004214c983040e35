import CSandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The kinds of thread a VMM process runs, each confined by its own seccomp filter (Firecracker's
/// vmm / api / vcpu split): a thread gets the filter of its kind when it starts, on top of the
/// process-wide one, so what it may call is the intersection of the two.
public enum ThreadKind: String, CaseIterable, Sendable {
    /// Runs KVM_RUN and the device emulation of the exits it returns.
    case vcpu
    /// A virtio device's I/O thread: its eventfds, disk image and TAP or passt socket.
    case io
    /// Everything else — the main thread, the control API, the console, snapshots, migration —
    /// and the process-wide filter every other kind starts from.
    case control
}

/// Whether and how a VMM process applies its seccomp filters.
public enum SeccompMode: String, CaseIterable, Sendable {
    /// A call outside a thread's policy stops the VM with a report naming it.
    case enforce
    /// Calls outside the policies are made and logged by the kernel (dmesg: "audit: type=1326 ...
    /// comm=THREAD ... syscall=N"), to derive or check a policy (scripts/seccomp-derive.sh).
    case log
    /// No filters (no_new_privs and dropped capabilities still apply).
    case off

    /// The variable that sets the mode for `vireo run`s a daemon starts (its flag wins otherwise).
    public static let environmentVariable = "VIREO_SECCOMP"
}

/// How a VMM process confines itself (the Firecracker jailer's in-process half): no new
/// privileges, no capabilities, and a seccomp filter per thread kind whose violation ends the
/// process with a report naming the system call. Off for code that embeds the VMM in another
/// process (the tests); `vireo run` turns it on.
public enum Sandbox {
    /// The exit status of a process stopped by a seccomp violation: 128 + SIGSYS, as if the kernel
    /// had killed it with that signal.
    public static let violationExitStatus: Int32 = 128 + SIGSYS

    /// 0: not confined; 1: enforcing; 2: logging.
    private static let state = Atomic<Int>(0)

    /// Whether `confineCurrentThread` installs filters (set by `confineProcess`).
    public static var isEnabled: Bool { state.load(ordering: .acquiring) != 0 }

    private static var outsidePolicy: SeccompAction { state.load(ordering: .acquiring) == 2 ? .log : .trap }

    /// Makes the process ready for `dropPrivileges`: call it first thing, before any thread starts
    /// (threads inherit the signal mask it fixes).
    public static func prepare() {
        _ = csandbox_prepare()
    }

    /// Sets no_new_privs and drops every capability of every thread. Call it once everything that
    /// needs privilege is open (/dev/kvm, TAP devices, passt started). no_new_privs reaches the
    /// other threads with the control filter (TSYNC carries it); capabilities are dropped by each
    /// thread itself, on a signal.
    public static func dropPrivileges() throws {
        var result = csandbox_set_no_new_privs()
        guard result == 0 else { throw SeccompError.privileges("set no_new_privs", errno: -result) }
        result = csandbox_drop_capabilities()
        guard result == 0 else { throw SeccompError.privileges("drop capabilities", errno: -result) }
    }

    /// Installs the violation report and the control filter on every thread of the process
    /// (TSYNC), and from then on `confineCurrentThread` narrows each new vCPU and I/O thread.
    /// Threads started later inherit the control filter.
    public static func confineProcess(mode: SeccompMode = .enforce) throws {
        guard mode != .off else { return }
        let handler = csandbox_install_violation_handler(violationExitStatus)
        guard handler == 0 else { throw SeccompError.privileges("install the SIGSYS handler", errno: -handler) }
        let outside: SeccompAction = mode == .log ? .log : .trap
        try install(SyscallPolicy.program(for: .control, outsidePolicy: outside), kind: .control, allThreads: true)
        state.store(mode == .log ? 2 : 1, ordering: .releasing)
    }

    /// Narrows the calling thread to `kind`'s filter when the process is confined; a no-op in a
    /// process that embeds the VMM without confinement.
    public static func confineCurrentThread(as kind: ThreadKind) throws {
        guard isEnabled, kind != .control else { return }
        try install(SyscallPolicy.program(for: kind, outsidePolicy: outsidePolicy), kind: kind, allThreads: false)
    }

    /// Registers the terminal settings to put back if a violation ends the process (raw mode).
    public static func restoreTerminalOnViolation(fd: Int32, settings: termios) {
        var copy = settings
        withUnsafeBytes(of: &copy) { csandbox_set_terminal_restore(fd, $0.baseAddress, UInt($0.count)) }
    }

    /// The calling thread's effective capabilities (0 once dropped).
    public static var effectiveCapabilities: UInt64 { csandbox_effective_capabilities() }

    static func install(_ program: SeccompProgram, kind: ThreadKind, allThreads: Bool) throws {
        let result = program.instructions.withUnsafeBufferPointer { buffer in
            csandbox_install_filter(buffer.baseAddress, UInt16(buffer.count), allThreads ? 1 : 0, kind.rawValue)
        }
        if result < 0 { throw SeccompError.install(kind: kind.rawValue, errno: Int32(-result)) }
        if result > 0 { throw SeccompError.threadsNotSynchronized(kind: kind.rawValue, thread: result) }
    }
}
