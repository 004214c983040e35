import GuestMemory
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Measures how fast this KVM runs guest kernel-mode code: a tiny real-mode guest (CPL0, like a
/// kernel) counts down a loop and signals the end with a port write. Native hardware needs
/// microseconds; an emulating KVM needs tens of milliseconds.
public enum KernelModeProbe {
    /// Enough to separate ~1 ns (native) from ~1 µs (emulated) per iteration by 100x either way,
    /// while costing only a few milliseconds of start-up where it is emulated.
    public static let iterations = 2_000

    public static func run(system: KVMSystem) throws -> KernelModeProbeResult {
        let vm = try system.createVM()
        try vm.setIdentityMapAddress(Machine.identityMapAddress)
        try vm.setTSSAddress(Machine.tssAddress)
        let memory = try GuestMemory(ranges: [(GuestAddress(0), 0x10000)])
        let region = memory.regions[0]
        try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: region.size, hostAddress: region.hostAddress)
        let count = UInt32(iterations)
        let code: [UInt8] = [0x66, 0xB9] + withUnsafeBytes(of: count.littleEndian, Array.init) // mov ecx, imm32
            + [0x66, 0x49, 0x75, 0xFC]  // 1: dec ecx; jnz 1b
            + [0xE6, 0xF4, 0xF4]        // out 0xf4, al; hlt
        try memory.writeBytes(code, to: GuestAddress(0x1000))
        let vcpu = try vm.createVCPU(id: 0)
        var special = try vcpu.getSpecialRegisters()
        special.cs.base = 0
        special.cs.selector = 0
        try vcpu.setSpecialRegisters(special)
        var registers = Registers()
        registers.rip = 0x1000
        try vcpu.setRegisters(registers)
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        for _ in 0..<4 {
            let exit = try vcpu.run()
            if case .ioOut(port: 0xF4, _, _) = exit {
                clock_gettime(CLOCK_MONOTONIC, &end)
                let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
                return KernelModeProbeResult(iterations: iterations, seconds: seconds)
            }
            if case .interrupted = exit { continue }
            throw KVMError.invalidArgument("kernel-mode probe guest stopped unexpectedly: \(exit)")
        }
        throw KVMError.invalidArgument("kernel-mode probe guest did not finish")
    }
}
