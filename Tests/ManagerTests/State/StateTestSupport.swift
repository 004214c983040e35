import Foundation
import TestSupport
@testable import Manager

/// A fresh directory under /tmp, removed when the value is released.
final class StateTempDir {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "vireo-state-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// A state dir inside this one that does not exist yet, so the store has to create it.
    var stateDirectory: String { path + "/state" }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A small valid definition; `generation` ends up in the stored JSON (the kernel command line).
func sampleDefinition(
    _ name: String, uuid: UUID = UUID(), generation: Int = 0, autostart: Bool = false
) -> VMDefinition {
    VMDefinition(
        name: name, uuid: uuid, memory: 64 << 20, vcpus: 1,
        os: OSBoot(kernel: "/var/lib/vireo/vmlinux", cmdline: "console=ttyS0 gen=\(generation)"),
        disks: [Disk(source: "/var/lib/vireo/\(name).qcow2", format: .qcow2, target: "vda")],
        autostart: autostart)
}

/// The generation `sampleDefinition` wrote, read back from a stored definition.
func generation(of definition: VMDefinition) -> Int? {
    definition.os.cmdline.split(separator: " ").first { $0.hasPrefix("gen=") }.flatMap { Int($0.dropFirst(4)) }
}

/// Reproducible pseudo-random choices, so a failing run can be replayed.
typealias StateTestRandom = SplitMix64
