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
        /// `iret` in protected mode (the emulator does only real mode's): the VMM performs it
        /// (ProtectedModeIret). Boot loaders such as SYSLINUX need it.
        case emulateIret(operandSizePrefix: Bool)
        /// Not recoverable: stop the VM with a report.
        case fatal(hint: String?)
    }

    public func fixup(for bytes: [UInt8]) -> Fixup {
        guard kind == .emulatedKernelMode else { return .fatal(hint: nil) }
        switch bytes.first {
        case 0xCC: return .injectBreakpoint
        case 0x9B: return .skipInstruction(length: 1)
        case 0xCF: return .emulateIret(operandSizePrefix: false)
        case 0x66 where bytes.count > 1 && bytes[1] == 0xCF: return .emulateIret(operandSizePrefix: true)
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
            let kind: Kind = probe.isNative ? .native : .emulatedKernelMode
            let verdict = probe.isNative ? "native" : "emulated"
            switch probe.userMode {
            case .success:
                return HostProfile(kind: kind, reason: "guest kernel mode measured \(verdict): \(probe.summary) (emulated above \(Int(KernelModeProbeResult.emulatedRatio))x)")
            case .failure:
                return HostProfile(kind: kind, reason: "guest kernel mode judged \(verdict) by absolute time, the CPL3 comparison being unavailable: \(probe.summary) (emulated above \(Int(KernelModeProbeResult.emulatedNanoseconds)) ns)")
            }
        }
        if access("/sys/module/kvm_pvm", F_OK) == 0 {
            return HostProfile(kind: .emulatedKernelMode, reason: "kvm_pvm module loaded (software-assisted KVM)")
        }
        return HostProfile(kind: .native, reason: "no software-assisted KVM module found")
    }
}

/// How long a fixed `dec/jnz` loop took in the probe guest.
public struct LoopTiming: Sendable, Equatable {
    public let iterations: Int
    public let seconds: Double

    public init(iterations: Int, seconds: Double) { self.iterations = iterations; self.seconds = seconds }

    public var nanosecondsPerIteration: Double { seconds * 1e9 / Double(max(iterations, 1)) }
    var isUsable: Bool { iterations > 0 && seconds > 0 && seconds.isFinite }
}

/// The same loop timed at CPL0 (guest kernel mode) and at CPL3 (guest user mode) in one guest.
public struct KernelModeProbeResult: Sendable, Equatable {
    public let kernelMode: LoopTiming
    /// Fails where this KVM cannot run the user-mode half; the decision then falls back to
    /// `emulatedNanoseconds`.
    public let userMode: Result<LoopTiming, ProbeFailure>

    /// CPL0 more than this many times slower than CPL3 means CPL0 is emulated. Measured: kvm_pvm
    /// 3000-5000x (1.8-2.5 µs against 0.3-0.8 ns per iteration); real hardware and a nested KVM under QEMU
    /// TCG ~1x, since there both modes run the same way. 20x leaves an order of magnitude of
    /// margin on each side for noise and a loaded host.
    public static let emulatedRatio = 20.0
    /// Without a CPL3 figure: native CPL0 runs an iteration in well under 10 ns, kvm_pvm's
    /// emulator in ~1 µs. Wrong for a host that is slow in every mode (TCG: ~12 µs), which is
    /// why the ratio comes first.
    public static let emulatedNanoseconds = 100.0

    public init(kernelMode: LoopTiming, userMode: Result<LoopTiming, ProbeFailure>) {
        self.kernelMode = kernelMode
        self.userMode = userMode.flatMap { timing in
            timing.isUsable ? .success(timing) : .failure(ProbeFailure(description: "CPL3 loop measured no time"))
        }
    }

    /// CPL0 time per iteration over CPL3's; nil without a usable CPL3 figure.
    public var ratio: Double? {
        guard case .success(let user) = userMode else { return nil }
        return kernelMode.nanosecondsPerIteration / user.nanosecondsPerIteration
    }

    public var isNative: Bool {
        if let ratio { return ratio <= Self.emulatedRatio }
        return kernelMode.nanosecondsPerIteration <= Self.emulatedNanoseconds
    }

    /// e.g. "CPL0 1310 ns/iteration, CPL3 0.3 ns/iteration: ratio 4400x".
    public var summary: String {
        let kernel = "CPL0 \(Self.format(kernelMode.nanosecondsPerIteration)) ns/iteration"
        switch userMode {
        case .success(let user):
            return "\(kernel), CPL3 \(Self.format(user.nanosecondsPerIteration)) ns/iteration: ratio \(Self.format(ratio ?? 0))x"
        case .failure(let why):
            return "\(kernel), CPL3 not measured (\(why))"
        }
    }

    static func format(_ value: Double) -> String {
        guard value.isFinite, value < 1e15 else { return "∞" }
        return value < 10 ? String(format1: value) : String(Int(value.rounded()))
    }
}

extension String {
    init(format1 value: Double) {
        let scaled = (value * 10).rounded() / 10
        self = String(scaled)
    }
}
