import ArgumentParser
import KVM
import VMM

/// Like virt-host-validate: what this host's KVM offers and which profile Vireo will use.
struct HostCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host-check",
        abstract: "Check this host's KVM: API version, capabilities, guest kernel-mode speed, host profile."
    )

    @Option(help: "Device node to check.")
    var device: String = "/dev/kvm"

    func run() throws {
        var failures = 0
        func line(_ label: String, _ result: String) {
            print(label.padding(to: 52) + ": " + result)
        }
        let system: KVMSystem
        do {
            system = try KVMSystem(path: device)
            line("KVM: checking for \(device)", "PASS")
        } catch {
            line("KVM: checking for \(device)", "FAIL (\(error))")
            throw ExitCode(1)
        }
        line("KVM: API version", "\(system.apiVersion) (PASS)")
        for capability in KVMCapability.allCases {
            let value = system.check(capability)
            let required = KVMCapability.required.contains(capability)
            let verdict = value > 0 ? "PASS" : (required ? "FAIL (required)" : "absent")
            if value == 0 && required { failures += 1 }
            line("KVM: \(capability.name)", value > 1 ? "\(verdict) (\(value))" : verdict)
        }
        let limits = system.vcpuLimits
        line("KVM: vCPUs per VM", "recommended \(limits.recommended), maximum \(limits.maximum)")
        if let cpuid = try? system.supportedCPUID() {
            line("KVM: supported CPUID leaves", "\(cpuid.count)")
        }
        let probe: KernelModeProbeResult?
        do {
            let result = try KernelModeProbe.run(system: system)
            probe = result
            line("KVM: guest kernel mode (CPL0) runs natively", result.isNative ? "yes (\(result.summary))" : "NO, emulated (\(result.summary))")
        } catch {
            probe = nil
            line("KVM: guest kernel mode (CPL0) runs natively", "unknown (probe failed: \(error))")
        }
        let profile = HostProfile.detect(kernelModeProbe: probe)
        line("Vireo: host profile", profile.description)
        for flag in profile.linuxGuestFlags {
            print("    guest flag \(flag.flag)\n        because \(flag.why)")
        }
        if profile.kind == .emulatedKernelMode {
            print("    VMM fixups: int3 at CPL0 -> inject #BP; fwait -> step over; other emulation failures -> stop with a report")
        }
        if failures > 0 { throw ExitCode(1) }
    }
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
