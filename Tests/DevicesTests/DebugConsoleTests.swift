import Foundation
import Testing
@testable import Devices

/// QEMU's debugcon on 0x402: reads say someone listens, writes go to the file, never more than the limit.
@Suite struct DebugConsoleTests {
    @Test func bytesGoToTheFileUpToTheLimitThenOneNote() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-debugcon-\(getpid()).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        let console = DebugConsole(fd: fd, limit: 8)
        #expect(console.read(offset: 0, size: 1) == 0xE9)
        for byte in Array("SeaBIOS (version 1.16)\n".utf8) { console.write(offset: 0, size: 1, value: UInt64(byte)) }
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(Array(written) == Array("SeaBIOS ".utf8) + DebugConsole.limitNote)
    }
}
