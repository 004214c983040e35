import Testing
@testable import VMM

@Suite struct HostProfileTests {
    @Test func nativeProfileChangesNothing() {
        let native = HostProfile(kind: .native, reason: "test")
        #expect(native.linuxGuestFlags.isEmpty)
        #expect(native.fixup(for: [0xCC]) == .fatal(hint: nil))
        #expect(native.fixup(for: [0x9B]) == .fatal(hint: nil))
    }

    @Test func emulatedProfileFixesInt3AndFwaitOnly() {
        let emulated = HostProfile(kind: .emulatedKernelMode, reason: "test")
        #expect(emulated.fixup(for: [0xCC, 0x90]) == .injectBreakpoint)
        #expect(emulated.fixup(for: [0x9B]) == .skipInstruction(length: 1))
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

    @Test func probeThresholdSeparatesNativeFromEmulated() {
        #expect(KernelModeProbeResult(iterations: 2_000, seconds: 0.000_05).isNative)
        #expect(!KernelModeProbeResult(iterations: 2_000, seconds: 0.002).isNative)
        #expect(HostProfile.detect(kernelModeProbe: KernelModeProbeResult(iterations: 20_000, seconds: 0.03)).kind == .emulatedKernelMode)
        #expect(HostProfile.detect(kernelModeProbe: KernelModeProbeResult(iterations: 20_000, seconds: 0.000_05)).kind == .native)
    }
}

@Suite struct VMConfigTests {
    @Test func parsesSizes() throws {
        #expect(try VMConfig.parseSize("512M") == 512 << 20)
        #expect(try VMConfig.parseSize("2G") == 2 << 30)
        #expect(try VMConfig.parseSize("4096K") == 4 << 20)
        #expect(try VMConfig.parseSize("1048576") == 1 << 20)
        for bad in ["", "M", "12X", "-1G", "1.5G", "99999999999999999999T", "0", "1GiB"] {
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
