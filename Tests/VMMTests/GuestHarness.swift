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
         devices: DeviceOptions = DeviceOptions(), configure: (Machine) throws -> Void = { _ in }) throws {
        let system = try KVMSystem()
        let config = try VMConfig(kernel: try TestGuests.bytes(guest), kernelPath: guest, initrd: initrd,
                                  initrdPath: initrd == nil ? nil : "initrd", cmdline: cmdline, cpus: cpus, memorySize: memory,
                                  devices: devices)
        serial = CapturedSerial()
        // Test guests need none of the Linux flags; the profile's exit fixups are what matter.
        let profile = HostProfile.detect(kernelModeProbe: nil)
        machine = try Machine(config: config, system: system, profile: profile, serialOutput: serial,
                              rngSeed: Array(repeating: 0xA5, count: 32))
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
