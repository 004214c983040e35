import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One live `vireo run` process of a VM, and the watcher that notices its end.
final class VMProcess: Sendable {
    let identity: ProcessIdentity
    /// The daemon started it (waitpid works) or re-attached to it after a restart (polling).
    let isChild: Bool
    /// The cgroup the daemon made for it at spawn (nil for a re-attached process, or one that runs
    /// without a group of its own).
    let cgroup: VMCgroup?
    private struct State {
        var intent: StopIntent = .none
        var hasAnswered: Bool
    }

    private let state: Mutex<State>
    private let exitedGroup = DispatchGroup()

    /// `isChild`: the daemon spawned it just now, and it has yet to answer on its control socket
    /// (a re-attached process has answered already).
    init(identity: ProcessIdentity, isChild: Bool, cgroup: VMCgroup? = nil) {
        self.identity = identity
        self.isChild = isChild
        self.cgroup = cgroup
        state = Mutex(State(hasAnswered: !isChild))
        exitedGroup.enter()
    }

    var intent: StopIntent {
        get { state.withLock { $0.intent } }
        set { state.withLock { $0.intent = newValue } }
    }

    /// The VMM's control API; its calls answer at once, except a snapshot (which writes guest RAM).
    /// Its control API answered once: the VM came up (a later end is not a failed start).
    var hasAnswered: Bool {
        get { state.withLock { $0.hasAnswered } }
        set { state.withLock { $0.hasAnswered = newValue } }
    }

    var control: HTTPClient { control(timeoutSeconds: 5) }

    func control(timeoutSeconds: Int) -> HTTPClient {
        HTTPClient(endpoint: .unix(path: identity.controlSocket), timeoutSeconds: timeoutSeconds)
    }

    /// Waits until the exit has been recorded; false on timeout.
    func waitForExit(seconds: Double) -> Bool {
        exitedGroup.wait(timeout: .now() + seconds) == .success
    }

    var hasExited: Bool { waitForExit(seconds: 0) }

    func markExited() { exitedGroup.leave() }

    /// Calls `onExit` (on a watcher thread) once the process is gone: with the waitpid status for
    /// a child, with nil for a re-attached process (found gone by polling /proc).
    func watch(onExit: @escaping @Sendable (Int32?) -> Void) {
        let identity = self.identity
        let isChild = self.isChild
        let thread = Thread {
            if isChild {
                var status: Int32 = 0
                while waitpid(identity.pid, &status, 0) < 0 {
                    if errno != EINTR {
                        onExit(nil)
                        return
                    }
                }
                onExit(status)
            } else {
                while ProcessSnapshot.isSameProcessRunning(pid: identity.pid, startTicks: identity.startTicks) {
                    usleep(200_000)
                }
                onExit(nil)
            }
        }
        thread.name = "vireo-watch-\(identity.pid)"
        thread.start()
    }

    /// SIGKILL, but only to the very process recorded (never to a process that reused its pid).
    func kill() {
        if ProcessSnapshot.isSameProcessRunning(pid: identity.pid, startTicks: identity.startTicks) {
            _ = Glibc.kill(identity.pid, SIGKILL)
        }
    }
}
