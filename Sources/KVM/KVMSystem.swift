import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// Capabilities Vireo checks by name (KVM_CHECK_EXTENSION numbers from <linux/kvm.h>).
public enum KVMCapability: CaseIterable, Sendable {
    case irqchip, pit2, pitState2, userMemory, setTSSAddr, setIdentityMapAddr, immediateExit, ioeventfd, irqfd,
         irqRouting, extCPUID, vcpuEvents, mpState, syncMMU, maxVCPUs, nrVCPUs, readonlyMem, coalescedMMIO,
         adjustClock, tscControl, xsave, debugRegisters

    public var name: String { "KVM_CAP_\(self)".uppercased() }

    var number: UInt {
        switch self {
        case .irqchip: return UInt(KVM_CAP_IRQCHIP)
        case .pit2: return UInt(KVM_CAP_PIT2)
        case .pitState2: return UInt(KVM_CAP_PIT_STATE2)
        case .userMemory: return UInt(KVM_CAP_USER_MEMORY)
        case .setTSSAddr: return UInt(KVM_CAP_SET_TSS_ADDR)
        case .setIdentityMapAddr: return UInt(KVM_CAP_SET_IDENTITY_MAP_ADDR)
        case .immediateExit: return UInt(KVM_CAP_IMMEDIATE_EXIT)
        case .ioeventfd: return UInt(KVM_CAP_IOEVENTFD)
        case .irqfd: return UInt(KVM_CAP_IRQFD)
        case .irqRouting: return UInt(KVM_CAP_IRQ_ROUTING)
        case .extCPUID: return UInt(KVM_CAP_EXT_CPUID)
        case .vcpuEvents: return UInt(KVM_CAP_VCPU_EVENTS)
        case .mpState: return UInt(KVM_CAP_MP_STATE)
        case .syncMMU: return UInt(KVM_CAP_SYNC_MMU)
        case .maxVCPUs: return UInt(KVM_CAP_MAX_VCPUS)
        case .nrVCPUs: return UInt(KVM_CAP_NR_VCPUS)
        case .readonlyMem: return UInt(KVM_CAP_READONLY_MEM)
        case .coalescedMMIO: return UInt(KVM_CAP_COALESCED_MMIO)
        case .adjustClock: return UInt(KVM_CAP_ADJUST_CLOCK)
        case .tscControl: return UInt(KVM_CAP_TSC_CONTROL)
        case .xsave: return UInt(KVM_CAP_XSAVE)
        case .debugRegisters: return UInt(KVM_CAP_DEBUGREGS)
        }
    }

    /// Capabilities a Vireo VM cannot run without.
    public static let required: [KVMCapability] = [
        .irqchip, .pit2, .userMemory, .setTSSAddr, .immediateExit, .extCPUID, .vcpuEvents, .mpState,
    ]
}

/// One CPUID leaf as KVM reports and accepts it.
public struct KVMCPUIDEntry: Equatable, Sendable, Codable {
    public var function: UInt32, index: UInt32, flags: UInt32
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32
    public init(function: UInt32, index: UInt32, flags: UInt32, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }
}

/// The /dev/kvm system file descriptor.
public final class KVMSystem: Sendable {
    let fd: FileDescriptor
    public let path: String

    public init(path: String = "/dev/kvm") throws(KVMError) {
        self.path = path
        let raw = open(path, O_RDWR | O_CLOEXEC)
        if raw < 0 {
            let err = errno
            switch err {
            case ENOENT, ENODEV, ENXIO: throw KVMError.deviceMissing(path: path)
            case EACCES, EPERM: throw KVMError.permissionDenied(path: path)
            default: throw KVMError.openFailed(path: path, errno: err)
            }
        }
        fd = FileDescriptor(raw)
        let version = apiVersion
        guard version == KVM_API_VERSION else { throw KVMError.unsupportedAPIVersion(version) }
    }

    public var apiVersion: Int32 { ckvm_ioctl_none(fd.raw, CKVM_GET_API_VERSION) }

    /// The capability's value (0 = absent; some capabilities return a count).
    public func check(_ capability: KVMCapability) -> Int32 {
        max(0, ckvm_ioctl_int(fd.raw, CKVM_CHECK_EXTENSION, capability.number))
    }

    /// Throws naming the first required capability that is missing.
    public func requireCapabilities(_ capabilities: [KVMCapability] = KVMCapability.required) throws(KVMError) {
        for capability in capabilities where check(capability) == 0 {
            throw KVMError.missingCapability(capability.name)
        }
    }

    /// Recommended and maximum vCPU counts for one VM.
    public var vcpuLimits: (recommended: Int, maximum: Int) {
        let recommended = Int(check(.nrVCPUs))
        let maximum = Int(check(.maxVCPUs))
        return (recommended == 0 ? 4 : recommended, maximum == 0 ? max(recommended, 4) : maximum)
    }

    var vcpuMmapSize: Int {
        get throws(KVMError) { Int(try retryingEINTR("KVM_GET_VCPU_MMAP_SIZE") { ckvm_ioctl_none(fd.raw, CKVM_GET_VCPU_MMAP_SIZE) }) }
    }

    /// The CPUID leaves KVM can virtualize on this host.
    public func supportedCPUID() throws(KVMError) -> [KVMCPUIDEntry] {
        var capacity: UInt32 = 128
        while capacity <= 4096 {
            guard let cpuid = ckvm_cpuid2_alloc(capacity) else { throw KVMError.mmapFailed(errno: ENOMEM) }
            defer { free(cpuid) }
            let result = ckvm_ioctl_ptr(fd.raw, CKVM_GET_SUPPORTED_CPUID, cpuid)
            if result < 0 {
                if errno == E2BIG { capacity *= 2; continue }
                throw KVMError.ioctlFailed("KVM_GET_SUPPORTED_CPUID", errno: errno)
            }
            let entries = ckvm_cpuid2_entries(cpuid)!
            return (0..<Int(cpuid.pointee.nent)).map { i in
                let e = entries[i]
                return KVMCPUIDEntry(function: e.function, index: e.index, flags: e.flags, eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
            }
        }
        throw KVMError.ioctlFailed("KVM_GET_SUPPORTED_CPUID", errno: E2BIG)
    }

    /// Creates a VM (x86 default machine type).
    public func createVM() throws(KVMError) -> VirtualMachine {
        let raw = try retryingEINTR("KVM_CREATE_VM") { ckvm_ioctl_int(fd.raw, CKVM_CREATE_VM, 0) }
        return VirtualMachine(fd: FileDescriptor(raw), system: self)
    }
}
