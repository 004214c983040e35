import Foundation
import Testing
import TestSupport
@testable import Storage

/// Helpers shared by the storage tests: temp dirs, deterministic data, and the real qemu tools.
enum Qemu {
    struct Missing: Error, CustomStringConvertible {
        let tool: String
        var description: String { "\(tool) not found: run scripts/setup-storage.sh (installs qemu-utils)" }
    }

    struct Failed: Error, CustomStringConvertible {
        let command: String
        let status: Int32
        let output: String
        var description: String { "`\(command)` exited \(status): \(output)" }
    }

    static func toolPath(_ name: String) throws -> String {
        for dir in ["/usr/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        throw Missing(tool: name)
    }

    /// Runs a tool; returns (status, stdout, stderr). stderr goes to a file: qemu-img check can print
    /// more than a pipe buffer of leak lines there, which would block it while stdout is being drained.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], allowFailure: Bool = false) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try toolPath(tool))
        process.arguments = arguments
        let out = Pipe()
        let errPath = NSTemporaryDirectory() + "vireo-stderr-" + UUID().uuidString
        FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try err.close()
        let errData = FileManager.default.contents(atPath: errPath) ?? Data()
        let result = (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
        if !allowFailure && result.0 != 0 {
            throw Failed(command: ([tool] + arguments).joined(separator: " "), status: result.0, output: result.1 + result.2)
        }
        return result
    }

    static func img(_ arguments: String...) throws { try run("qemu-img", arguments) }
    static func io(_ path: String, _ commands: String...) throws {
        try run("qemu-io", ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [path])
    }

    /// `qemu-img check` result: (exit status, output).
    static func check(_ path: String) throws -> (Int32, String) {
        let (status, out, err) = try run("qemu-img", ["check", path], allowFailure: true)
        return (status, out + err)
    }
}

final class TempDir {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "vireo-storage-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random bytes, so failures reproduce.
typealias TestRandom = SplitMix64

func readAll(_ device: any BlockDevice) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(device.size))
    try out.withUnsafeMutableBytes { try device.read(into: $0, at: 0) }
    return out
}

func fileBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Writes a raw file mixing random data, compressible text and zero runs.
func writePatternRaw(_ path: String, size: Int, seed: UInt64) throws {
    var random = TestRandom(state: seed)
    var data = [UInt8](repeating: 0, count: size)
    let text = (0..<(26 * 7)).map { UInt8(ascii: "a") + UInt8($0 / 7) }
    var at = 0
    try data.withUnsafeMutableBytes { raw in
        while at < size {
            let run = min(size - at, Int(random.below(200_000)) + 1)
            switch random.below(3) {
            case 0:
                random.bytes(run).withUnsafeBytes { raw.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: run) }
            case 1:
                var done = 0
                while done < run {
                    let n = min(text.count, run - done)
                    text.withUnsafeBytes { raw.baseAddress!.advanced(by: at + done).copyMemory(from: $0.baseAddress!, byteCount: n) }
                    done += n
                }
            default: break
            }
            at += run
        }
        try Data(raw).write(to: URL(fileURLWithPath: path))
    }
}

/// The first differing offset, for readable failures (memcmp first: tests run unoptimized).
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    if a.count != b.count { return min(a.count, b.count) }
    let equal = a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    if equal { return nil }
    return zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset
}
