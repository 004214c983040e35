import KVM
import Testing
@testable import VMM

@Suite struct HostProfileTests {
    @Test func nativeProfileChangesNothing() {
        let native = HostProfile(kind: .native, reason: "test")
        #expect(native.linuxGuestFlags.isEmpty)
        #expect(native.fixup(for: [0xCC]) == .fatal(hint: nil))
        #expect(native.fixup(for: [0x9B]) == .fatal(hint: nil))
        #expect(native.fixup(for: [0xCF]) == .fatal(hint: nil))
    }

    @Test func emulatedProfileFixesInt3FwaitAndIret() {
        let emulated = HostProfile(kind: .emulatedKernelMode, reason: "test")
        #expect(emulated.fixup(for: [0xCC, 0x90]) == .injectBreakpoint)
        #expect(emulated.fixup(for: [0x9B]) == .skipInstruction(length: 1))
        #expect(emulated.fixup(for: [0xCF, 0xC3]) == .emulateIret(operandSizePrefix: false))
        #expect(emulated.fixup(for: [0x66, 0xCF]) == .emulateIret(operandSizePrefix: true))
        #expect(emulated.fixup(for: [0x66, 0x90]) == .fatal(hint: nil))
        #expect(emulated.fixup(for: [0xF0, 0x48, 0x0F, 0xC7, 0x0E]) == .fatal(hint: "cmpxchg8b/16b: boot the guest with clearcpuid=cx16"))
        #expect(emulated.fixup(for: [0x48, 0x0F, 0xAE, 0x2F]) == .fatal(hint: "xsave/xrstor family: boot the guest with noxsave"))
        #expect(emulated.fixup(for: [0x0F, 0x01, 0xC1]) == .fatal(hint: "vmcall: build the guest without KVM hypercall users (PTP_1588_CLOCK_KVM)"))
        #expect(emulated.fixup(for: []) == .fatal(hint: nil))
    }

    @Test func emulatedProfileNamesEveryFlagWithAReason() {
        let flags = HostProfile.emulatedKernelMode.linuxGuestFlags
        let joined = flags.map(\.flag).joined(separator: " ")
        for needed in ["noxsave", "nosmap", "clearcpuid=cx16", "popcnt", "nopv"] { #expect(joined.contains(needed)) }
        #expect(flags.allSatisfy { !$0.why.isEmpty })
    }

    /// Linux copies clearcpuid= into a 128-byte buffer and drops the rest silently ("rdrand
    /// (unknown: r)" in a boot log): the value must fit.
    @Test func clearcpuidValueFitsLinuxsBuffer() throws {
        let flag = try #require(HostProfile.emulatedKernelMode.linuxGuestFlags.first { $0.flag.hasPrefix("clearcpuid=") })
        let value = flag.flag.dropFirst("clearcpuid=".count)
        #expect(value.utf8.count <= HostProfile.clearcpuidLimit)
        #expect(value.contains("cx16") && value.contains("popcnt"))
    }

    static func probe(kernelNanoseconds: Double, userNanoseconds: Double?) -> KernelModeProbeResult {
        let iterations = 2_000
        let user: Result<LoopTiming, ProbeFailure> = userNanoseconds.map {
            .success(LoopTiming(iterations: 1_000_000, seconds: $0 * 1e-9 * 1_000_000))
        } ?? .failure(ProbeFailure(description: "test: no CPL3"))
        return KernelModeProbeResult(kernelMode: LoopTiming(iterations: iterations, seconds: kernelNanoseconds * 1e-9 * Double(iterations)),
                                     userMode: user)
    }

    /// kvm_pvm: CPL0 emulated, CPL3 native, thousands of times apart.
    @Test func cpl0ThousandsOfTimesSlowerThanCPL3IsEmulated() {
        let probe = Self.probe(kernelNanoseconds: 1_200, userNanoseconds: 0.3)
        #expect(abs(probe.ratio! - 4_000) < 1)
        #expect(!probe.isNative)
        let profile = HostProfile.detect(kernelModeProbe: probe)
        #expect(profile.kind == .emulatedKernelMode)
        #expect(profile.reason.contains("CPL0 1200 ns/iteration, CPL3 0.3 ns/iteration: ratio 4000x"))
    }

    /// A nested KVM under QEMU TCG: every mode slow (11,947 ns measured), but equally slow.
    @Test func slowButEquallySlowModesAreNative() {
        let probe = Self.probe(kernelNanoseconds: 12_000, userNanoseconds: 10_000)
        #expect(abs(probe.ratio! - 1.2) < 0.001)
        #expect(probe.isNative)
        #expect(HostProfile.detect(kernelModeProbe: probe).kind == .native)
    }

    @Test func fastEqualModesAreNative() {
        let probe = Self.probe(kernelNanoseconds: 0.3, userNanoseconds: 0.3)
        #expect(HostProfile.detect(kernelModeProbe: probe).kind == .native)
        #expect(probe.summary == "CPL0 0.3 ns/iteration, CPL3 0.3 ns/iteration: ratio 1.0x")
    }

    @Test func ratioThresholdIsTwentyTimes() {
        #expect(Self.probe(kernelNanoseconds: 19, userNanoseconds: 1).isNative)
        #expect(!Self.probe(kernelNanoseconds: 21, userNanoseconds: 1).isNative)
    }

    /// Without a CPL3 figure the old absolute rule (100 ns per CPL0 iteration) decides, and says so.
    @Test func missingCPL3FallsBackToAbsoluteTime() {
        let slow = HostProfile.detect(kernelModeProbe: Self.probe(kernelNanoseconds: 1_200, userNanoseconds: nil))
        #expect(slow.kind == .emulatedKernelMode)
        #expect(slow.reason.contains("absolute time") && slow.reason.contains("test: no CPL3"))
        let fast = HostProfile.detect(kernelModeProbe: Self.probe(kernelNanoseconds: 5, userNanoseconds: nil))
        #expect(fast.kind == .native)
        #expect(fast.reason.contains("absolute time"))
        // A CPL3 run that measured nothing is no comparison either (no division by zero).
        let zero = Self.probe(kernelNanoseconds: 1_200, userNanoseconds: 0)
        #expect(zero.ratio == nil && !zero.isNative)
    }
}

extension KVMGuestSuites {
    @Suite struct KernelModeProbeTests {
        /// The real probe on this host's /dev/kvm: both figures are real measurements and the
        /// verdict follows the ratio, whatever this host turns out to be.
        @Test func probeMeasuresBothPrivilegeLevels() throws {
            let probe = try KernelModeProbe.run(system: try KVMSystem())
            let kernel = probe.kernelMode.nanosecondsPerIteration
            let user = try probe.userMode.get().nanosecondsPerIteration
            #expect(kernel.isFinite && kernel > 0)
            #expect(user.isFinite && user > 0)
            let ratio = try #require(probe.ratio)
            #expect(abs(ratio - kernel / user) < ratio * 1e-9)
            let kind = HostProfile.detect(kernelModeProbe: probe).kind
            #expect(kind == (ratio > KernelModeProbeResult.emulatedRatio ? .emulatedKernelMode : .native))
        }
    }
}

@Suite struct VMConfigTests {
    @Test func parsesSizes() throws {
        #expect(try VMConfig.parseSize("512M") == 512 << 20)
        #expect(try VMConfig.parseSize("2G") == 2 << 30)
        #expect(try VMConfig.parseSize("4096K") == 4 << 20)
        #expect(try VMConfig.parseSize("1048576") == 1 << 20)
        // The same parser as definitions: IEC names too.
        #expect(try VMConfig.parseSize("1GiB") == 1 << 30)
        for bad in ["", "M", "12X", "-1G", "1.5G", "99999999999999999999T", "0", "1 G B"] {
            #expect(throws: ConfigError.self, "\(bad)") { try VMConfig.parseSize(bad) }
        }
    }

    @Test func refusesBadMachineShapes() {
        #expect(throws: ConfigError.invalidCPUCount(0, maximum: VMConfig.maximumCPUs)) {
            try VMConfig(kernel: [1], kernelPath: "k", cpus: 0)
        }
        #expect(throws: ConfigError.self) { try VMConfig(kernel: [1], kernelPath: "k", cpus: 255) }
        #expect(throws: ConfigError.self) { try VMConfig(kernel: [1], kernelPath: "k", memorySize: 1 << 20) }
        #expect(throws: ConfigError.self) { try VMConfig(kernel: [1], kernelPath: "k", memorySize: 2 << 40) }
    }
}

/// VMContract.ByteSize is the one size parser: the same text means the same bytes in a
/// definition, `vireo run --memory` and `vireo img` (which alone also takes qemu-img's fractions).
@Suite struct ByteSizeTests {
    @Test func oneParserOneMeaning() {
        for (text, bytes) in [("512M", UInt64(512) << 20), ("2GiB", 2 << 30), ("1536 MiB", 1536 << 20), ("4096", 4096),
                              ("1KB", 1000), ("1k", 1024), ("3T", 3 << 40)] {
            #expect(ByteSize.parse(text) == .success(bytes), "\(text)")
            #expect(ByteSize.parse(text, fractions: true) == .success(bytes), "\(text)")
        }
        #expect(ByteSize.parse("1.5G") == .failure(.notASize))
        #expect(ByteSize.parse("1.5G", fractions: true) == .success(3 << 29))
        #expect(ByteSize.parse("0.5K", fractions: true) == .success(512))
        #expect(ByteSize.parse("1.1", fractions: true) == .success(1))   // bytes: rounded down
        #expect(ByteSize.parse("15.5E", fractions: true) == .success(31 << 59))
        #expect(ByteSize.parse("16E", fractions: true) == .failure(.tooLarge))
        #expect(ByteSize.parse("1.G", fractions: true) == .failure(.notASize))
        #expect(ByteSize.parse("-1G") == .failure(.negative))
    }
}
