import Devices
import Sandbox
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The interactive serial console: raw terminal, keystrokes to the guest, Ctrl-A X to leave.
final class SerialConsole: @unchecked Sendable {
    static let escapeByte: UInt8 = 0x01   // Ctrl-A, as in QEMU
    static let help = "Ctrl-A X: quit   Ctrl-A Ctrl-A: send Ctrl-A   Ctrl-A H: this help"

    private var rawTerminal: RawTerminal?
    private let target = SharedMachine()
    var onQuit: (@Sendable () -> Void)?

    func attach(_ machine: Machine) { target.set(machine) }

    /// The machine keystrokes (and control-API calls) go to now.
    var currentMachine: Machine? { target.get() }

    /// Puts the terminal in raw mode when stdin is one (restored by `restoreTerminal`).
    func enterRawMode() {
        if rawTerminal == nil { rawTerminal = RawTerminal() }
    }

    func restoreTerminal() {
        rawTerminal?.restore()
    }

    /// Reads stdin on its own thread until EOF or Ctrl-A X; the process exits with the VM, so this
    /// thread is never joined (it is blocked in read(2)).
    func startInputThread() {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let console = Unmanaged<SerialConsole>.fromOpaque(raw!).takeRetainedValue()
            console.readLoop()
            return nil
        }, box)
        pthread_detach(thread)
    }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 256)
        var escaped = false
        while true {
            let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return }
            var pending: [UInt8] = []
            for byte in buffer[0..<count] {
                if escaped {
                    escaped = false
                    switch byte {
                    case UInt8(ascii: "x"), UInt8(ascii: "X"):
                        onQuit?()
                        return
                    case Self.escapeByte: pending.append(byte)
                    case UInt8(ascii: "h"), UInt8(ascii: "H"):
                        let text = Array("\r\n[vireo] \(Self.help)\r\n".utf8)
                        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
                    default: break
                    }
                } else if byte == Self.escapeByte && rawTerminal?.isRaw == true {
                    escaped = true
                } else {
                    pending.append(byte)
                }
            }
            deliver(pending)
        }
    }

    /// Hands bytes to COM1, waiting for FIFO space rather than dropping keystrokes.
    private func deliver(_ bytes: [UInt8]) {
        var remaining = bytes[...]
        while !remaining.isEmpty {
            guard let machine = target.get(), machine.outcome == nil else { return }
            remaining = remaining.dropFirst(machine.typeConsoleInput(Array(remaining), timeoutSeconds: 1))
        }
    }
}

/// The machine the console currently feeds (replaced on `--on-reboot restart`).
final class SharedMachine: Sendable {
    private let machine = Mutex<Machine?>(nil)
    func set(_ m: Machine?) { machine.withLock { $0 = m } }
    func get() -> Machine? { machine.withLock { $0 } }
}

/// The terminal in raw mode while attached (keystrokes go to the guest as typed); a no-op when
/// stdin is not a terminal. Shared by `vireo run` and `vireo console`.
final class RawTerminal: @unchecked Sendable {
    private var saved: termios?

    init() {
        guard isatty(0) != 0 else { return }
        var attributes = termios()
        guard tcgetattr(0, &attributes) == 0 else { return }
        saved = attributes
        // A seccomp violation ends the process from a signal handler: it puts these back too.
        Sandbox.restoreTerminalOnViolation(fd: 0, settings: attributes)
        cfmakeraw(&attributes)
        tcsetattr(0, TCSANOW, &attributes)
    }

    /// Whether the terminal is in raw mode now (the escape key is only taken from a terminal).
    var isRaw: Bool { saved != nil }

    func restore() {
        guard var attributes = saved else { return }
        tcsetattr(0, TCSANOW, &attributes)
        saved = nil
    }
}
