/// One CPUID leaf/subleaf as KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2 exchange it.
public struct CPUIDEntry: Codable, Equatable, Sendable {
    public var function: UInt32, index: UInt32, flags: UInt32
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }
}

/// Turns the host's supported CPUID into what one vCPU reports: its APIC id, a topology of one
/// socket with `vcpuCount` single-threaded cores (matching the MP table), and the KVM signature.
public enum CPUIDShaping {
    /// KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry is selected by function and index.
    public static let significantIndex: UInt32 = 1

    public static func shape(_ supported: [CPUIDEntry], vcpuIndex: Int, vcpuCount: Int) -> [CPUIDEntry] {
        let count = UInt32(clamping: max(vcpuCount, 1))
        let apicID = UInt32(truncatingIfNeeded: max(vcpuIndex, 0)) & 0xFF
        // Bits of APIC id that number the cores: ceil(log2(count)).
        let coreBits = UInt32(count <= 1 ? 0 : 32 - (count - 1).leadingZeroBitCount)
        let maximumBasic = supported.first { $0.function == 0 }?.eax ?? 0
        var out: [CPUIDEntry] = []
        for var entry in supported {
            switch entry.function {
            case 0x1:
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (min(count, 0xFF) << 16) | (apicID << 24)
                entry.ecx |= 1 << 31                                // hypervisor present
                if count > 1 { entry.edx |= 1 << 28 } else { entry.edx &= ~(1 << 28) }   // HTT: EBX[23:16] valid
            case 0x4:
                // EAX[31:26] cores per package - 1; EAX[25:14] logical CPUs sharing this cache - 1.
                let level = (entry.eax >> 5) & 0x7
                let sharing: UInt32 = level >= 3 ? count - 1 : 0
                entry.eax = (entry.eax & 0x3FFF) | (min(sharing, 0xFFF) << 14) | (min(count - 1, 0x3F) << 26)
            case 0xB, 0x1F:
                continue                                           // regenerated below
            case 0x4000_0000:
                continue                                           // regenerated below
            case 0x8000_0008:
                entry.ecx = (entry.ecx & ~0xF0FF) | (coreBits << 12) | min(count - 1, 0xFF)   // AMD NC, ApicIdSize
            case 0x8000_001E:
                entry.eax = apicID                                 // AMD extended APIC id
            default:
                break
            }
            out.append(entry)
        }
        for function: UInt32 in [0xB, 0x1F] where maximumBasic >= function && supported.contains(where: { $0.function == function }) {
            out += topologyLeaf(function, apicID: apicID, count: count, coreBits: coreBits)
        }
        let hypervisorMax = max(supported.first { $0.function == 0x4000_0000 }?.eax ?? 0, 0x4000_0001)
        out.append(CPUIDEntry(function: 0x4000_0000, eax: hypervisorMax,
                              ebx: fourCC("KVMK"), ecx: fourCC("VMKV"), edx: fourCC("M\0\0\0")))
        return out
    }

    /// Extended topology: subleaf 0 = SMT level (1 thread), 1 = core level (`count` cores),
    /// 2 = invalid level terminating the list; EDX is the x2APIC id on every subleaf.
    private static func topologyLeaf(_ function: UInt32, apicID: UInt32, count: UInt32, coreBits: UInt32) -> [CPUIDEntry] {
        [
            CPUIDEntry(function: function, index: 0, flags: significantIndex, eax: 0, ebx: 1, ecx: 1 << 8, edx: apicID),
            CPUIDEntry(function: function, index: 1, flags: significantIndex, eax: coreBits, ebx: count,
                       ecx: 2 << 8 | 1, edx: apicID),
            CPUIDEntry(function: function, index: 2, flags: significantIndex, eax: 0, ebx: 0, ecx: 2, edx: apicID),
        ]
    }

    private static func fourCC(_ text: String) -> UInt32 {
        Array(text.utf8).prefix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
    }
}
