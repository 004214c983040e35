import GuestMemory
import Testing
@testable import Boot

@Suite("ACPI through the kernel loader: placement, boot_params.acpi_rsdp_addr, PVH rsdp_paddr")
struct ACPILoaderTests {
    static let vmlinux = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: [0xF4])])

    static func request(_ kernel: [UInt8] = vmlinux, vcpus: Int = 2, acpi: Bool, boot: BootProtocol = .auto) -> BootRequest {
        var request = TestImages.request(kernel, vcpus: vcpus, boot: boot)
        request.acpi = acpi ? ACPIPlatform(vcpuCount: vcpus) : nil
        return request
    }

    @Test("with a platform: tables at 0xE0000, acpi_rsdp_addr set, MP table still written")
    func linuxWithACPI() throws {
        let memory = try TestImages.memory(128 << 20)
        let plan = try KernelLoader.load(Self.request(acpi: true), into: memory)
        #expect(try memory.bytes(0xE0000, 8) == Array("RSD PTR ".utf8))
        #expect(try memory.u64(X86Layout.zeroPageAddress + 0x70) == 0xE0000)
        #expect(try memory.bytes(X86Layout.mpTableAddress, 4) == Array("_MP_".utf8))
        #expect(try memory.bytes(X86Layout.mpFloatingPointerCopyAddress, 4) == Array("_MP_".utf8))
        let expected = try ACPITables.build(ACPIPlatform(vcpuCount: 2))
        #expect(try memory.bytes(0xE0000, expected.bytes.count) == expected.bytes)
        #expect(plan.notes.contains { $0.hasPrefix("ACPI: RSDP at 0xe0000") })
        // The tables sit in the e820-reserved low area, so the guest never reuses them as RAM.
        let reserved = X86Layout.e820Map(of: memory).first { $0.type == E820Entry.reserved }
        #expect(reserved.map { $0.address <= 0xE0000 && 0xE0000 + UInt64(expected.bytes.count) <= $0.address + $0.size } == true)
        // boot_params' e820 also reserves the ECAM, so Linux trusts MMCONFIG from early boot.
        let count = Int(try memory.u8(X86Layout.zeroPageAddress + 0x1E8))
        let entries = try (0..<count).map { index in
            let at = X86Layout.zeroPageAddress + 0x2D0 + UInt64(index) * 20
            return E820Entry(address: try memory.u64(at), size: try memory.u64(at + 8), type: try memory.u32(at + 16))
        }
        #expect(entries == [
            E820Entry(address: 0, size: 0x9FC00, type: 1),
            E820Entry(address: 0x9FC00, size: 0x100000 - 0x9FC00, type: 2),
            E820Entry(address: 0x100000, size: (128 << 20) - 0x100000, type: 1),
            E820Entry(address: 0xE000_0000, size: 0x10_0000, type: 2),
        ])
    }

    @Test("PCI windows or an ECAM over guest RAM are refused", arguments: [
        ACPIPlatform(vcpuCount: 2, pciMMIO32: 0x0400_0000..<0x0800_0000),
        ACPIPlatform(vcpuCount: 2, pciECAMBase: 0x0100_0000),
        ACPIPlatform(vcpuCount: 2, pciMMIO64: 0x1_0000_0000..<0x2_0000_0000),
    ])
    func windowsOverRAM(platform: ACPIPlatform) throws {
        var request = Self.request(acpi: true)
        request.acpi = platform
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: 4 << 30))
        let error = TestImages.loadError(request, memory: memory)
        #expect(error?.description.contains("overlaps guest RAM") == true, "\(String(describing: error))")
    }

    @Test("without a platform: no tables and acpi_rsdp_addr stays 0 (existing callers unchanged)")
    func linuxWithoutACPI() throws {
        let memory = try TestImages.memory(128 << 20)
        let plan = try KernelLoader.load(Self.request(acpi: false), into: memory)
        #expect(try memory.bytes(0xE0000, 8) == [UInt8](repeating: 0, count: 8))
        #expect(try memory.u64(X86Layout.zeroPageAddress + 0x70) == 0)
        #expect(!plan.notes.contains { $0.hasPrefix("ACPI") })
    }

    @Test("PVH: hvm_start_info.rsdp_paddr points at the RSDP only when ACPI is on", arguments: [true, false])
    func pvh(acpi: Bool) throws {
        let kernel = TestImages.elf(is64: false, entry: 0x100_0000, segments: [.init(0x100_0000, data: [0xF4])],
                                    notes: TestImages.pvhNote(entry: 0x100_0000, descSize: 4))
        let memory = try TestImages.memory(128 << 20)
        let plan = try KernelLoader.load(Self.request(kernel, acpi: acpi), into: memory)
        #expect(plan.format == .elfPVH)
        #expect(try memory.u64(X86Layout.bootInfoAddress + 0x20) == (acpi ? 0xE0000 : 0))
        // The PVH memmap carries the ECAM reservation too.
        let memmap = try memory.u64(X86Layout.bootInfoAddress + 0x28)
        let entries = try memory.u32(X86Layout.bootInfoAddress + 0x30)
        #expect(entries == (acpi ? 4 : 3))
        if acpi {
            #expect(try memory.u64(memmap + 3 * 24) == 0xE000_0000 && memory.u32(memmap + 3 * 24 + 16) == 2)
        }
    }

    @Test("a platform whose vCPU count differs from the request's is refused before anything is loaded")
    func vcpuMismatch() throws {
        var request = Self.request(vcpus: 2, acpi: true)
        request.acpi = ACPIPlatform(vcpuCount: 4)
        let memory = try TestImages.memory(128 << 20)
        let error = TestImages.loadError(request, memory: memory)
        #expect(error == .acpi("the ACPI platform describes 4 vCPU(s) but the machine has 2"))
        #expect(try memory.bytes(0x100_0000, 1) == [0])
    }

    @Test("254 vCPUs still fit below the MP floating pointer copy at 0xF0000")
    func largestMachineFits() throws {
        let tables = try ACPITables.build(ACPIPlatform(vcpuCount: 254, pciMMIO64: 0x100_0000_0000..<0x200_0000_0000))
        #expect(0xE0000 + UInt64(tables.bytes.count) <= X86Layout.mpFloatingPointerCopyAddress)
    }
}
