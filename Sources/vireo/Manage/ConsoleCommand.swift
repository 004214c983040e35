import ArgumentParser
import Foundation
import Manager
import VMContract
#if canImport(Glibc)
import Glibc
#endif

struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Attach to a VM's serial console: recent output first, then live. Escape: Ctrl-].",
        discussion: "Several consoles may attach to one VM at once; each sees all output, and all may type.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws { try attachConsole(name: name, connection: connection) }
}

/// Streams the console to stdout and keystrokes to the guest until Ctrl-] or the VM stops.
func attachConsole(name: String, connection: ConnectionOptions) throws {
    try manage {
        let client = try connection.client()
        let path = "/v1/vms/\(escapedName(name))/console"
        writeStandardError("Connected to domain '\(name)'\nEscape character is ^] (Ctrl + ])\n")
        let terminal = RawTerminal()
        defer { terminal.restore() }
        let handle = StreamHandle()
        let input = Thread { forwardKeystrokes(client: client, path: path + "/input", handle: handle) }
        input.start()
        let response: HTTPResponse
        do {
            response = try client.stream("GET", path + "?follow=1", connection: handle) { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
            }
        } catch where handle.isCancelled {
            // Ctrl-]: the stream was cut on purpose.
            terminal.restore()
            writeStandardError("\n")
            return
        }
        terminal.restore()
        if !(200..<300).contains(response.status) { throw failure(response, doing: "Failed to get console of", name: name) }
        writeStandardError("\n")
    }
}

/// Reads stdin until Ctrl-] (then ends the stream) or EOF; bytes go to POST .../console/input,
/// resent until the guest's UART took them all.
private func forwardKeystrokes(client: HTTPClient, path: String, handle: StreamHandle) {
    var buffer = [UInt8](repeating: 0, count: 256)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return }
        var chunk = Array(buffer[0..<count])
        var escape = false
        if let index = chunk.firstIndex(of: 0x1D) {
            chunk = Array(chunk[..<index])
            escape = true
        }
        var pending = chunk[...]
        var idle = 0
        while !pending.isEmpty && idle < 500 {
            // The daemon passes the VMM's answer through: a ConsoleInputResult.
            guard let answer = try? client.request("POST", path, body: Array(pending)), answer.status == 200,
                  let accepted = (try? ContractJSON.decode(ConsoleInputResult.self, from: answer.body))?.accepted,
                  accepted >= 0 else { break }
            pending = pending.dropFirst(accepted)
            if accepted == 0 { idle += 1; usleep(10_000) }
        }
        if escape {
            handle.cancel()
            return
        }
    }
}

