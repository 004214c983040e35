import Devices
import Foundation
import KVM
import Testing
@testable import VMM

/// COM1 output captured for assertions, with waiting for a line to appear.
final class CapturedSerial: SerialOutput, @unchecked Sendable {
    private let bytes = Guarded<[UInt8]>([])

    func emit(_ byte: UInt8) { bytes.update { $0.append(byte) } }

    var text: String { bytes.read { String(decoding: $0, as: UTF8.self) } }
    var count: Int { bytes.read { $0.count } }

    /// Waits (on the condition variable, not a sleep loop) until `needle` has been printed.
    @discardableResult
    func waitFor(_ needle: String, timeoutSeconds: Double = 60) -> Bool {
        bytes.wait(until: { String(decoding: $0, as: UTF8.self).contains(needle) }, timeoutSeconds: timeoutSeconds) { _ in true } ?? false
    }
}

enum GuestHarnessError: Error, CustomStringConvertible {
    case buildFailed(String)
    var description: String {
        switch self { case let .buildFailed(log): return "building the test guests failed:\n\(log)" }
    }
}

/// The tiny guests in TestGuests/, built once per test run with the repo's Makefile.
enum TestGuests {
    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }()

    static let outputDirectory = packageRoot.appendingPathComponent(".build/test-guests")

    private static let buildResult: Result<Void, GuestHarnessError> = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        process.arguments = ["-s", "-C", packageRoot.appendingPathComponent("TestGuests").path, "OUT=\(outputDirectory.path)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do {
            try process.run()
            let log = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return process.terminationStatus == 0 ? .success(()) : .failure(.buildFailed(log))
        } catch {
            return .failure(.buildFailed("\(error)"))
        }
    }()

    static func path(_ name: String) throws -> String {
        try buildResult.get()
        return outputDirectory.appendingPathComponent(name).path
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: try path(name))))
    }
}

/// A machine booted from a test guest through the library, the way `vireo run` does it.
struct BootedGuest {
    let machine: Machine
    let serial: CapturedSerial

    init(_ guest: String, cmdline: String = "", cpus: Int = 1, memory: UInt64 = 64 << 20, initrd: [UInt8]? = nil,
         devices: DeviceOptions = DeviceOptions(), configure: (Machine) throws -> Void = { _ in },
         log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        let system = try KVMSystem()
        let config = try VMConfig(kernel: try TestGuests.bytes(guest), kernelPath: guest, initrd: initrd,
                                  initrdPath: initrd == nil ? nil : "initrd", cmdline: cmdline, cpus: cpus, memorySize: memory,
                                  devices: devices)
        serial = CapturedSerial()
        // Test guests need none of the Linux flags; the profile's exit fixups are what matter.
        let profile = HostProfile.detect(kernelModeProbe: nil)
        machine = try Machine(config: config, system: system, profile: profile, serialOutput: serial,
                              rngSeed: Array(repeating: 0xA5, count: 32), log: log)
        try configure(machine)
        try machine.start()
    }

    /// Types `text` into COM1 through the VMM's flow control (what `vireo run`'s console and the
    /// control API use). False if the guest stopped reading before all of it went in.
    func type(_ text: String, timeoutSeconds: Double = 30) -> Bool {
        let bytes = Array(text.utf8)
        return machine.typeSerialInput(bytes, timeoutSeconds: timeoutSeconds) == bytes.count
    }

    /// Runs to the end (bounded: a hung guest fails the test instead of hanging it).
    func finish(timeoutSeconds: Double = 120) -> MachineExit? {
        let outcome = machine.waitForExit(timeoutSeconds: timeoutSeconds)
        if outcome == nil { machine.stop() }
        return outcome
    }
}

/// A test device that records what the guest wrote and answers reads with a fixed pattern.
final class RecordingDevice: BusDevice, @unchecked Sendable {
    let writes = Guarded<[(offset: UInt64, size: Int, value: UInt64)]>([])
    let readValue: UInt64
    init(readValue: UInt64) { self.readValue = readValue }
    func read(offset: UInt64, size: Int) -> UInt64 { readValue &+ offset }
    func write(offset: UInt64, size: Int, value: UInt64) { writes.update { $0.append((offset, size, value)) } }
    var writeCount: Int { writes.read { $0.count } }
}

/// A VM session (what `vireo run` runs) on a thread of its own, for tests of the session, the
/// control API and snapshots.
final class SessionGuest: @unchecked Sendable {
    let session: VMSession
    /// Machines built so far and the session's exit status once it has ended.
    private let progress = Guarded<(machines: Int, status: Int32?)>((0, nil))
    /// Everything the guest printed in this session, and the last "user: tick N" seen.
    private let printed = Guarded<(bytes: [UInt8], lastTick: Int, tickLines: Int, line: [UInt8])>(([], 0, 0, []))
    /// The session's own lines (what `vireo run` prints as "vireo: ..."), for failure messages.
    private let logged = Guarded<[String]>([])
    var log: String { logged.read { $0.joined(separator: "\n") } }

    /// Starts `spec` and returns once its first machine exists or the session has ended.
    init(_ spec: LaunchSpec, timeoutSeconds: Double = 60) throws {
        let logged = self.logged
        session = try VMSession(spec: spec, system: try KVMSystem(), terminal: nil, log: { line in logged.update { $0.append(line) } })
        let progress = self.progress
        session.onMachine = { _, _ in progress.update { $0.machines += 1 } }
        let printed = self.printed
        _ = session.console.attach { byte in
            printed.update { printed in
                printed.bytes.append(byte)
                guard byte == 0x0A else { printed.line.append(byte); return }
                let line = String(decoding: printed.line, as: UTF8.self)
                if line.hasPrefix("user: tick "), let tick = Int(line.dropFirst("user: tick ".count)) {
                    printed.lastTick = tick
                    printed.tickLines += 1
                }
                printed.line = []
            }
        }
        let session = self.session
        guard startThread(name: "session", { let status = session.run(); progress.update { $0.status = status } }) != nil else {
            throw GuestHarnessError.buildFailed("cannot start the session thread")
        }
        _ = progress.wait(until: { $0.machines > 0 || $0.status != nil }, timeoutSeconds: timeoutSeconds) { _ in true }
    }

    /// A test guest by name, booted as `vireo run --kernel` would boot it.
    convenience init(guest: String, cmdline: String = "", memory: UInt64 = 32 << 20, cpus: Int = 1,
                     devices: DeviceOptions = DeviceOptions(), onReboot: RebootAction = .exit) throws {
        try self.init(LaunchSpec(kernel: try TestGuests.path(guest), cmdline: cmdline, cpus: cpus, memoryBytes: memory,
                                 onReboot: onReboot, devices: devices, kernelCache: false))
    }

    var machine: Machine { session.machine! }

    /// All the output of this session (not just the console's ring).
    var output: String { printed.read { String(decoding: $0.bytes, as: UTF8.self) } }

    /// The last tick the counting guest printed in this session (0: none yet).
    var lastTick: Int { printed.read { $0.lastTick } }

    /// Waits until the guest has printed `count` more tick lines in this session than it had.
    func waitForMoreTicks(_ count: Int, timeoutSeconds: Double = 60) -> Bool {
        let target = printed.read { $0.tickLines } + count
        return printed.wait(until: { $0.tickLines >= target }, timeoutSeconds: timeoutSeconds) { _ in true } ?? false
    }

    /// Waits (bounded) until the output shows `needle`; each wake-up searches only what is new.
    func waitFor(_ needle: String, timeoutSeconds: Double = 30) -> Bool {
        let pattern = Array(needle.utf8)
        final class Cursor: @unchecked Sendable { var checked = 0 }
        let cursor = Cursor()
        return printed.wait(until: { printed in
            let start = max(0, cursor.checked - pattern.count)
            cursor.checked = printed.bytes.count
            guard printed.bytes.count - start >= pattern.count else { return false }
            return (start...(printed.bytes.count - pattern.count)).contains { printed.bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) }
        }, timeoutSeconds: timeoutSeconds) { _ in true } ?? false
    }

    /// The session's exit status once it has ended (bounded wait), nil if it did not end in time.
    func waitForEnd(timeoutSeconds: Double = 60) -> Int32? {
        progress.wait(until: { $0.status != nil }, timeoutSeconds: timeoutSeconds) { $0.status } ?? nil
    }

    /// Stops the VM and waits for the session to end.
    @discardableResult
    func stop() -> Int32? {
        session.requestStop()
        return waitForEnd()
    }
}
