import Testing
@testable import Boot

@Suite("CPUID shaping")
struct CPUIDShapingTests {
    static let supported: [CPUIDEntry] = [
        CPUIDEntry(function: 0, eax: 0x1F, ebx: 0x756E_6547, ecx: 0x6C65_746E, edx: 0x4965_6E69),
        CPUIDEntry(function: 1, eax: 0x906EA, ebx: 0x0010_0800 | 0x0700_0000, ecx: 0x0120_2000, edx: 0x0781_FBFF),
        CPUIDEntry(function: 4, index: 0, flags: 1, eax: 0x1C00_4121),   // L1d
        CPUIDEntry(function: 4, index: 3, flags: 1, eax: 0x1C00_4163),   // L3
        CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
        CPUIDEntry(function: 0xB, index: 1, flags: 1, eax: 4, ebx: 8, ecx: 0x201, edx: 7),
        CPUIDEntry(function: 0x1F, index: 0, flags: 1),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001),
        CPUIDEntry(function: 0x4000_0001, eax: 0x0100_07FB),
        CPUIDEntry(function: 0x8000_0008, eax: 0x3027, ecx: 0x7007),
    ]

    func lookup(_ entries: [CPUIDEntry], _ function: UInt32, _ index: UInt32 = 0) -> CPUIDEntry? {
        entries.first { $0.function == function && $0.index == index }
    }

    @Test("leaf 1: APIC id, logical count, HTT and hypervisor bits")
    func leafOne() throws {
        let shaped = CPUIDShaping.shape(Self.supported, vcpuIndex: 3, vcpuCount: 4)
        let leaf = try #require(lookup(shaped, 1))
        #expect(leaf.ebx >> 24 == 3 && (leaf.ebx >> 16) & 0xFF == 4 && leaf.ebx & 0xFFFF == 0x0800)
        #expect(leaf.ecx & (1 << 31) != 0 && leaf.edx & (1 << 28) != 0)
        #expect(leaf.eax == 0x906EA)
        let single = try #require(lookup(CPUIDShaping.shape(Self.supported, vcpuIndex: 0, vcpuCount: 1), 1))
        #expect(single.ebx >> 24 == 0 && single.edx & (1 << 28) == 0)
    }

    @Test("leaves 0xB and 0x1F describe vcpuCount cores of one thread; EDX = x2APIC id")
    func topology() throws {
        let shaped = CPUIDShaping.shape(Self.supported, vcpuIndex: 5, vcpuCount: 6)
        for function: UInt32 in [0xB, 0x1F] {
            let smt = try #require(lookup(shaped, function, 0))
            let core = try #require(lookup(shaped, function, 1))
            let end = try #require(lookup(shaped, function, 2))
            #expect(smt.eax == 0 && smt.ebx == 1 && smt.ecx == 0x100 && smt.edx == 5)
            #expect(core.eax == 3 && core.ebx == 6 && core.ecx == 0x201 && core.edx == 5)
            #expect(end.ebx == 0 && (end.ecx >> 8) & 0xFF == 0 && end.edx == 5)
            #expect(shaped.filter { $0.function == function }.count == 3)
        }
        let caches = shaped.filter { $0.function == 4 }
        #expect(caches.allSatisfy { $0.eax >> 26 == 5 })
        #expect(lookup(shaped, 4, 3).map { ($0.eax >> 14) & 0xFFF } == 5)
        #expect(lookup(shaped, 4, 0).map { ($0.eax >> 14) & 0xFFF } == 0)
        #expect(lookup(shaped, 0x8000_0008).map { $0.ecx & 0xF0FF } == 0x3005)
    }

    @Test("KVM signature leaf, kept features leaf, no duplicate entries")
    func hypervisorLeaf() throws {
        let shaped = CPUIDShaping.shape(Self.supported, vcpuIndex: 0, vcpuCount: 2)
        let signature = try #require(lookup(shaped, 0x4000_0000))
        let bytes = [signature.ebx, signature.ecx, signature.edx].flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
        #expect(bytes == Array("KVMKVMKVM".utf8) + [0, 0, 0])
        #expect(signature.eax == 0x4000_0001)
        #expect(lookup(shaped, 0x4000_0001)?.eax == 0x0100_07FB)
        let keys = shaped.map { "\($0.function):\($0.index)" }
        #expect(Set(keys).count == keys.count)
    }

    @Test("topology leaves are not invented beyond the host's maximum basic leaf")
    func maximumLeafRespected() {
        var supported = Self.supported.filter { $0.function != 0xB && $0.function != 0x1F }
        supported[0].eax = 0xA
        let shaped = CPUIDShaping.shape(supported, vcpuIndex: 0, vcpuCount: 2)
        #expect(!shaped.contains { $0.function == 0xB || $0.function == 0x1F })
    }
}
