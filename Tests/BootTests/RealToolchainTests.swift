import Foundation
import GuestMemory
import Testing
@testable import Boot

/// Images produced by the real toolchain (cc/as/ld), checked against readelf as an independent oracle.
@Suite("toolchain-built kernels")
struct RealToolchainTests {
    static func build(_ source: String, flags: [String]) throws -> [UInt8] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-cc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("kernel.S"), output = directory.appendingPathComponent("kernel")
        try source.write(to: input, atomically: true, encoding: .utf8)
        try run("/usr/bin/env", ["cc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none"] + flags
                + ["-o", output.path, input.path])
        return [UInt8](try Data(contentsOf: output))
    }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process(), pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("\(arguments.joined(separator: " ")) failed") }
        return output
    }

    static func readelfEntry(_ image: [UInt8]) throws -> UInt64 {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-readelf-\(UUID().uuidString)").path
        try Data(image).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let header = try run("/usr/bin/env", ["readelf", "-h", path])
        let line = try #require(header.split(separator: "\n").first { $0.contains("Entry point address") })
        let value = try #require(line.split(separator: " ").last)
        return try #require(UInt64(value.dropFirst(2), radix: 16))
    }

    @Test("cc -nostdlib ELF64 boots linux64 with rip = readelf's entry and its code in place")
    func elf64() throws {
        let image = try Self.build(".text\n.globl _start\n_start:\n hlt\n jmp _start\n", flags: [])
        let memory = try TestImages.memory(64 << 20)
        let plan = try KernelLoader.load(TestImages.request(image), into: memory)
        let entry = try Self.readelfEntry(image)
        #expect(plan.format == .elfLinux64 && plan.entry.rip == entry)
        #expect(try memory.bytes(entry, 3) == [0xF4, 0xEB, 0xFD])   // hlt; jmp _start
    }

    @Test("cc -m32 Multiboot ELF32 boots Multiboot at readelf's entry")
    func multibootELF32() throws {
        let source = """
        .text
        .align 4
        .long 0x1BADB002, 0x3, -(0x1BADB002 + 0x3)
        .globl _start
        _start:
         hlt
         jmp _start
        """
        let image = try Self.build(source, flags: ["-m32"])
        let memory = try TestImages.memory(256 << 20)
        let plan = try KernelLoader.load(TestImages.request(image), into: memory)
        let entry = try Self.readelfEntry(image)
        #expect(plan.format == .multiboot && plan.entry.rip == entry && plan.entry.rax == 0x2BAD_B002)
        #expect(try memory.bytes(entry, 3) == [0xF4, 0xEB, 0xFD])
    }
}
