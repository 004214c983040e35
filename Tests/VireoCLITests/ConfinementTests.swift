import Foundation
import Testing

/// What a running `vireo run` looks like from outside once it has confined itself: no_new_privs,
/// no capabilities in any thread, seccomp filtering on, and vCPU and I/O threads under a filter
/// of their own on top of the process-wide one.
@Suite struct ConfinementTests {
    struct ThreadStatus {
        let name: String
        let fields: [String: String]
    }

    static func threads(of pid: Int32) -> [ThreadStatus] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8) else { return nil }
            var fields: [String: String] = [:]
            for line in status.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
            }
            return ThreadStatus(name: fields["Name"] ?? "?", fields: fields)
        }
    }

    @Test func aRunningVMHasNoPrivilegesAndAFilterPerThreadKind() throws {
        _ = VireoBinary.buildGuests
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-confine-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = directory + "/disk.raw"
        FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20))
        let socket = directory + "/api.sock"
        let process = Process()
        process.executableURL = VireoBinary.executable
        process.arguments = ["run", "--kernel", VireoBinary.guest("mb-user.elf"), "--cmdline", "ticks=100000", "--memory", "32M",
                             "--cpus", "2", "--disk", "path=\(disk),format=raw", "--rng", "--api-socket", socket]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() }; process.waitUntilExit() }
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("tick 1") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        let threads = Self.threads(of: process.processIdentifier)
        let names = threads.map(\.name)
        #expect(names.contains("vcpu0") && names.contains("vcpu1") && names.contains("vblk0") && names.contains("vrng"), "\(names)")
        for thread in threads {
            #expect(thread.fields["NoNewPrivs"] == "1", "\(thread.name)")
            #expect(thread.fields["Seccomp"] == "2", "\(thread.name): filter mode")
            for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                #expect(thread.fields[set] == "0000000000000000", "\(thread.name) \(set)")
            }
            // The process-wide filter, plus the thread's own for vCPU and I/O threads. (KVM's
            // kvm-nx-lpage-recovery worker is the kernel's, made in the vCPU thread's image.)
            guard !thread.name.hasPrefix("kvm-") else { continue }
            let own = thread.name.hasPrefix("vcpu") || thread.name == "vblk0" || thread.name == "vrng"
            #expect(thread.fields["Seccomp_filters"] == (own ? "2" : "1"), "\(thread.name)")
        }
        process.terminate()
        process.waitUntilExit()
        // SIGTERM's orderly stop (its handling thread is under the control filter): 128 + 15.
        #expect(process.terminationReason == .exit && process.terminationStatus == 128 + 15)
    }
}
