#if canImport(Glibc)
import Glibc
#endif

/// Everything Vireo does differently on a KVM host whose guest kernel mode is not native.
///
/// Some nested / software-assisted KVMs (e.g. kvm_pvm) execute guest CPL0 code in an instruction
/// emulator: it lacks some instructions and `KVM_SET_CPUID2` cannot hide the host's features from
/// the guest. This is the one place that knows about it; on a normal host the profile is `.native`
/// and none of this is active.
public struct HostProfile: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable { case native, emulatedKernelMode = "emulated-kernel-mode" }

    public let kind: Kind
    /// How it was chosen, for `--verbose` and `host-check`.
    public let reason: String

    public static let native = HostProfile(kind: .native, reason: "forced")
    public static let emulatedKernelMode = HostProfile(kind: .emulatedKernelMode, reason: "forced")

    public init(kind: Kind, reason: String) { self.kind = kind; self.reason = reason }

    public var description: String { "\(kind.rawValue) (\(reason))" }

    /// A guest command-line flag and why the host needs it.
    public struct GuestFlag: Sendable, Equatable {
        public let flag: String
        public let why: String
    }

    /// Flags that keep a Linux guest off instructions the emulator cannot execute (HOST-KVM.md).
    public var linuxGuestFlags: [GuestFlag] {
        guard kind == .emulatedKernelMode else { return [] }
        return [
            GuestFlag(flag: "noxsave", why: "xsave/xrstor are not emulated (also drops AVX, which needs XSAVE)"),
            GuestFlag(flag: "nosmap", why: "clac/stac are not emulated"),
            GuestFlag(flag: "nosmep", why: "keep CR4 simple for the emulator"),
            GuestFlag(flag: "nopcid", why: "invpcid/PCID paths are not emulated"),
            GuestFlag(flag: "noinvpcid", why: "invpcid is not emulated"),
            GuestFlag(flag: "nofsgsbase", why: "rd/wrfsbase are not emulated"),
            GuestFlag(flag: "nox2apic", why: "keep the LAPIC in xAPIC (MMIO) mode, which the in-kernel LAPIC handles without x2APIC MSRs"),
            GuestFlag(flag: "clearcpuid=" + Self.clearedCPUFeatures.joined(separator: ","),
                      why: "CPUID cannot be masked by KVM_SET_CPUID2 here, so the guest is told to ignore features whose instructions the emulator lacks (cmpxchg16b, popcnt, movbe, ...)"),
            GuestFlag(flag: "lpj=10000000", why: "skip delay-loop calibration, which takes seconds under emulation"),
            GuestFlag(flag: "nopv", why: "KVM paravirt features (PV IPIs, PV TLB flush, kvmclock pairing) use the vmcall hypercall, which hangs the vCPU here with no exit: measured as an SMP boot stuck after 'kvm-guest: setup PV IPIs'"),
        ]
    }

    /// Features the guest must not use. Those a dedicated flag above fully covers (xsave and AVX,
    /// fsgsbase, pcid, invpcid, x2apic) are left out because Linux reads at most `clearcpuidLimit`
    /// bytes of this option and silently ignores the rest; smap stays (measured: `nosmap` alone
    /// still left clac patched in on 6.1).
    static let clearedCPUFeatures = [
        "cx16", "smap", "popcnt", "movbe", "rdpid", "clwb", "clflushopt", "aes", "pclmulqdq", "sha_ni",
        "sse4_1", "sse4_2", "rdrand", "rdseed", "bmi1", "bmi2", "abm", "erms", "fsrm",
    ]
    /// Linux 6.x parses `clearcpuid=` into a 128-byte buffer (cpu_parse_early_param).
    static let clearcpuidLimit = 127

    /// What to do about an emulation failure on this host.
    public enum Fixup: Equatable, Sendable {
        /// `int3` at CPL0: advance RIP past it and inject #BP, as the CPU would have.
        case injectBreakpoint
        /// `fwait`: nothing to wait for without x87 exceptions pending; step over it.
        case skipInstruction(length: UInt64)
        /// Not recoverable: stop the VM with a report.
        case fatal(hint: String?)
    }

    public func fixup(for bytes: [UInt8]) -> Fixup {
        guard kind == .emulatedKernelMode else { return .fatal(hint: nil) }
        switch bytes.first {
        case 0xCC: return .injectBreakpoint
        case 0x9B: return .skipInstruction(length: 1)
        default: return .fatal(hint: Self.hint(for: bytes))
        }
    }

    /// Known emulator gaps and the guest flag that avoids each (best effort; prefixes skipped).
    static func hint(for bytes: [UInt8]) -> String? {
        let body = Array(bytes.drop { [0xF0, 0xF2, 0xF3, 0x66, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65].contains($0) || (0x40...0x4F).contains($0) })
        if body.starts(with: [0x0F, 0xC7]) { return "cmpxchg8b/16b: boot the guest with clearcpuid=cx16" }
        if body.starts(with: [0x0F, 0xAE]) { return "xsave/xrstor family: boot the guest with noxsave" }
        if body.starts(with: [0x0F, 0x01, 0xCA]) || body.starts(with: [0x0F, 0x01, 0xCB]) { return "clac/stac: boot the guest with nosmap clearcpuid=smap" }
        if body.starts(with: [0x0F, 0xB8]) { return "popcnt: boot the guest with clearcpuid=popcnt" }
        if body.starts(with: [0x0F, 0x01, 0xC1]) { return "vmcall: build the guest without KVM hypercall users (PTP_1588_CLOCK_KVM)" }
        return nil
    }

    // MARK: Detection

    /// Detects the profile: a known software-assisted KVM module, confirmed (or overridden) by a
    /// measurement of guest kernel-mode speed when a probe result is supplied.
    public static func detect(kernelModeProbe: KernelModeProbeResult?) -> HostProfile {
        if let probe = kernelModeProbe {
            return probe.isNative
                ? HostProfile(kind: .native, reason: "guest kernel mode measured native: \(probe.summary)")
                : HostProfile(kind: .emulatedKernelMode, reason: "guest kernel mode measured emulated: \(probe.summary)")
        }
        if access("/sys/module/kvm_pvm", F_OK) == 0 {
            return HostProfile(kind: .emulatedKernelMode, reason: "kvm_pvm module loaded (software-assisted KVM)")
        }
        return HostProfile(kind: .native, reason: "no software-assisted KVM module found")
    }
}

/// How long a guest took for a fixed loop at CPL0; native hardware runs it in microseconds.
public struct KernelModeProbeResult: Sendable, Equatable {
    public let iterations: Int
    public let seconds: Double

    public var nanosecondsPerIteration: Double { seconds * 1e9 / Double(max(iterations, 1)) }
    /// Native CPL0 runs a dec/jnz iteration in well under 10 ns; the emulator takes ~1000x that.
    public var isNative: Bool { nanosecondsPerIteration < 100 }
    public var summary: String {
        let ns = nanosecondsPerIteration
        return "\(iterations) loop iterations at CPL0 took \(ns < 10 ? String(format1: ns) : String(Int(ns))) ns each"
    }
}

extension String {
    init(format1 value: Double) {
        let scaled = (value * 10).rounded() / 10
        self = String(scaled)
    }
}
