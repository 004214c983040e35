import Foundation
import GuestMemory
import Testing
@testable import Boot

/// A distribution bzImage, when one is provided: `VIREO_TEST_BZIMAGE=/path/to/vmlinuz`.
/// (The guest-building script caches Debian's kernel; these tests run wherever it exists.)
private let realKernelPath = ProcessInfo.processInfo.environment["VIREO_TEST_BZIMAGE"]

@Suite("real bzImage", .enabled(if: realKernelPath != nil, "set VIREO_TEST_BZIMAGE to a bzImage to run"))
struct RealKernelTests {
    static let path = realKernelPath

    @Test("the payload decompresses on the host and the vmlinux inside loads at 16 MiB")
    func decompressesRealKernel() throws {
        let kernel = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try #require(Self.path))))
        let memory = try TestImages.memory(512 << 20)
        let plan = try KernelLoader.load(BootRequest(kernel: kernel, kernelName: "vmlinuz", initrd: [1, 2, 3],
                                                     cmdline: "console=ttyS0", vcpuCount: 2, rngSeed: [UInt8](repeating: 9, count: 32)),
                                         into: memory)
        for note in plan.notes { print("  \(note)") }
        guard case .bzImageDecompressed = plan.format else { Issue.record("fell back: \(plan.notes)"); return }
        #expect(plan.entry.rip == 0x100_0000)
        #expect(plan.kernelEnd.raw > 0x100_0000)
        let header = try SetupHeader(parsing: kernel)
        #expect(try memory.bytes(X86Layout.zeroPageAddress + 0x202, 4) == Array("HdrS".utf8))
        #expect(try memory.u32(X86Layout.zeroPageAddress + 0x260) == UInt32(header.initSize))
        // Same plan through PVH, where the vmlinux carries the note (CONFIG_PVH).
        let pvh = try KernelLoader.load(BootRequest(kernel: kernel, kernelName: "vmlinuz", bootProtocol: .pvh),
                                        into: try TestImages.memory(512 << 20))
        #expect(pvh.format == .elfPVH)
        print("  PVH entry \(hex(pvh.entry.rip))")
    }
}
