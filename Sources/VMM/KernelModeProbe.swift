import GuestMemory
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Measures how fast this KVM runs guest kernel-mode code compared with guest user-mode code: one
/// tiny 64-bit guest counts down the same `dec/jnz` loop at CPL0 and at CPL3 and signals the end
/// of each run with a port write.
///
/// The ratio is what matters, not the absolute time: a software-assisted KVM that emulates CPL0
/// (kvm_pvm) runs the CPL0 loop thousands of times slower than the CPL3 one, while real hardware
/// and a nested KVM under QEMU TCG (where everything is slow, ~12 µs per iteration) run both at
/// the same speed.
public enum KernelModeProbe {
    /// Each loop starts with this many iterations: a few milliseconds where the mode is emulated.
    public static let initialIterations: UInt32 = 2_000
    /// The loop's own time must reach this (at least), and ten times the cost of an empty run, so
    /// entry, exit and their jitter stay a few percent of the figure; shorter runs are repeated
    /// with more iterations. Under TCG an empty run costs far more than the ~10-30 µs of a VM
    /// entry and PIO exit on the development hosts (HOST-KVM.md), and the first run of a mode
    /// also pays for faulting in the guest's pages, so both are measured and subtracted.
    static let minimumLoopSeconds = 0.001
    static let maximumLoopSeconds = 0.05
    /// Runs per privilege level before the last figure is taken as it is, and the most one run
    /// may take (no run is started after one that took a quarter of it): the probe runs at every
    /// `vireo run`, also on loaded or fully emulated machines.
    static let maximumRuns = 5
    static let budgetSeconds = 0.4
    /// Timed runs per mode at the calibrated length; each mode's fastest counts.
    static let rounds = 5

    // Guest layout (one 64 KiB slot): code, GDT, page tables, a zeroed TSS.
    static let memorySize: UInt64 = 0x10000
    static let codeAddress: UInt64 = 0x1000
    static let gdtAddress: UInt64 = 0x1800
    static let pml4Address: UInt64 = 0x2000
    static let tssAddress: UInt64 = 0x6000
    static let donePort: UInt16 = 0xF4

    public static func run(system: KVMSystem) throws -> KernelModeProbeResult {
        let vm = try system.createVM()
        try vm.setIdentityMapAddress(Machine.identityMapAddress)
        try vm.setTSSAddress(Machine.tssAddress)
        let memory = try GuestMemory(ranges: [(GuestAddress(0), memorySize)])
        let region = memory.regions[0]
        try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: region.size, hostAddress: region.hostAddress)
        try writeGuest(into: memory)
        let vcpu = try vm.createVCPU(id: 0)
        var kernelMode = try calibrate(on: vcpu, privilege: .kernel)
        var userMode: Calibration?
        do {
            userMode = try calibrate(on: vcpu, privilege: .user)
        } catch {
            return KernelModeProbeResult(kernelMode: kernelMode.timing, userMode: .failure(ProbeFailure(description: "\(error)")))
        }
        // Wall-clock time only grows when the host preempts the VMM (a loaded machine, or the
        // nested test host's vCPU sharing a core): alternate the modes and keep each one's fastest.
        for _ in 1..<rounds {
            kernelMode.improve(try time(on: vcpu, privilege: .kernel, iterations: kernelMode.iterations))
            if var user = userMode {
                user.improve(try time(on: vcpu, privilege: .user, iterations: user.iterations))
                userMode = user
            }
        }
        return KernelModeProbeResult(kernelMode: kernelMode.timing, userMode: userMode.map { .success($0.timing) }
                                     ?? .failure(ProbeFailure(description: "CPL3 loop did not run")))
    }

    enum Privilege: UInt8 {
        case kernel = 0, user = 3
    }

    /// A loop length found long enough to trust, the cost of an empty run, and the fastest loop
    /// time seen at that length.
    struct Calibration {
        let iterations: UInt32
        let emptyRun: Double
        /// Infinite until a run took longer than an empty one (a figure lost in the jitter counts for nothing).
        private(set) var loopSeconds: Double

        init(iterations: UInt32, emptyRun: Double, loopSeconds: Double) {
            self.iterations = iterations
            self.emptyRun = emptyRun
            self.loopSeconds = loopSeconds > 0 ? loopSeconds : .infinity
        }
        /// No usable figure (never measured above the jitter) reads as zero seconds.
        var timing: LoopTiming { LoopTiming(iterations: Int(iterations), seconds: loopSeconds.isFinite ? loopSeconds : 0) }
        mutating func improve(_ runSeconds: Double) {
            let loop = runSeconds - emptyRun
            if loop > 0 { loopSeconds = min(loopSeconds, loop) }
        }
    }

    /// Grows the loop at one privilege level until its own time (the run's time less that of an
    /// empty run) is long enough to trust, within a time budget per mode.
    static func calibrate(on vcpu: VCPU, privilege: Privilege) throws -> Calibration {
        _ = try time(on: vcpu, privilege: privilege, iterations: 1)   // warm-up: first entry, page faults
        // What entry and exit alone cost; the fastest of three, since a preempted run reads long.
        var emptyRun = Double.infinity
        for _ in 0..<3 { emptyRun = min(emptyRun, try time(on: vcpu, privilege: privilege, iterations: 1)) }
        let wanted = min(max(minimumLoopSeconds, 10 * emptyRun), maximumLoopSeconds)
        var iterations = initialIterations
        var calibration = Calibration(iterations: 0, emptyRun: emptyRun, loopSeconds: 0)
        for _ in 0..<maximumRuns {
            let runSeconds = try time(on: vcpu, privilege: privilege, iterations: iterations)
            let loopSeconds = runSeconds - emptyRun
            calibration = Calibration(iterations: iterations, emptyRun: emptyRun, loopSeconds: loopSeconds)
            guard loopSeconds < wanted, runSeconds < budgetSeconds / 4, iterations < UInt32.max else { break }
            // A loop lost in the jitter grows 10x, a measured one towards twice the wanted time,
            // at most 100x a step: with the budget check above no run passes budgetSeconds.
            let growth = loopSeconds > 0 ? min(2 * wanted / loopSeconds, 100) : 10
            iterations = UInt32(min((Double(iterations) * growth).rounded(.up), Double(UInt32.max)))
        }
        return calibration
    }

    static func time(on vcpu: VCPU, privilege: Privilege, iterations: UInt32) throws -> Double {
        try vcpu.setSpecialRegisters(specialRegisters(from: try vcpu.getSpecialRegisters(), privilege: privilege))
        return try runLoop(on: vcpu, iterations: iterations)
    }

    /// One run of the loop from the start of the code; returns the host-clock time it took.
    static func runLoop(on vcpu: VCPU, iterations: UInt32) throws -> Double {
        var registers = Registers()
        registers.rip = codeAddress
        registers.rcx = UInt64(iterations)
        // IOPL 3: the `out` that ends the loop is allowed at CPL3 without an I/O bitmap.
        registers.rflags = 0x2 | 0x3000
        try vcpu.setRegisters(registers)
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        for _ in 0..<4 {
            let exit = try vcpu.run()
            if case .ioOut(port: donePort, _, _) = exit {
                clock_gettime(CLOCK_MONOTONIC, &end)
                return Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
            }
            if case .interrupted = exit { continue }
            throw KVMError.invalidArgument("kernel-mode probe guest stopped unexpectedly: \(exit)")
        }
        throw KVMError.invalidArgument("kernel-mode probe guest did not finish")
    }

    /// `1: dec ecx; jnz 1b; out 0xf4, al; 2: jmp 2b`, with the count in RCX.
    static let loopCode: [UInt8] = [0xFF, 0xC9, 0x75, 0xFC, 0xE6, UInt8(donePort), 0xEB, 0xFE]

    // Descriptor-table selectors; user selectors carry RPL 3.
    static let kernelCodeSelector: UInt16 = 0x08, kernelDataSelector: UInt16 = 0x10
    static let userCodeSelector: UInt16 = 0x18 | 3, userDataSelector: UInt16 = 0x20 | 3
    static let tssSelector: UInt16 = 0x28

    static func segment(selector: UInt16, code: Bool, dpl: UInt8) -> Segment {
        // Execute/read or read/write, accessed bit set; 64-bit code (L) for code segments.
        Segment(base: 0, limit: 0xFFFF_FFFF, selector: selector, type: code ? 0xB : 0x3, present: true, dpl: dpl,
                db: !code, s: true, l: code, g: true)
    }

    static func specialRegisters(from current: SpecialRegisters, privilege: Privilege) -> SpecialRegisters {
        var special = current
        let user = privilege == .user
        let code = segment(selector: user ? userCodeSelector : kernelCodeSelector, code: true, dpl: privilege.rawValue)
        let data = segment(selector: user ? userDataSelector : kernelDataSelector, code: false, dpl: privilege.rawValue)
        special.cs = code
        special.ds = data; special.es = data; special.fs = data; special.gs = data; special.ss = data
        // A 64-bit busy TSS (type 11), as VM entry in long mode requires.
        special.tr = Segment(base: tssAddress, limit: 0x67, selector: tssSelector, type: 0xB, present: true)
        special.gdt = DescriptorTable(base: gdtAddress, limit: UInt16(gdt.count * 8 - 1))
        special.idt = DescriptorTable(base: 0, limit: 0)
        special.cr0 = 1 << 0 | 1 << 4 | 1 << 31      // PE, ET, PG
        special.cr3 = pml4Address
        special.cr4 = 1 << 5                         // PAE; TSD clear
        special.efer = 1 << 8 | 1 << 10              // LME, LMA
        return special
    }

    /// Null, kernel code/data, user code/data, TSS (two slots): the same segments the registers hold.
    static let gdt: [UInt64] = [
        0,
        0x00AF_9B00_0000_FFFF,   // kernel code: P, DPL 0, execute/read, L, G
        0x00CF_9300_0000_FFFF,   // kernel data: P, DPL 0, read/write, D/B, G
        0x00AF_FB00_0000_FFFF,   // user code: P, DPL 3
        0x00CF_F300_0000_FFFF,   // user data: P, DPL 3
        0x0000_8B00_0000_0067 | (tssAddress & 0xFF_FFFF) << 16, 0,
    ]

    /// Code, GDT and identity-mapping page tables (4 KiB pages over the whole slot) with the
    /// user/supervisor bit at every level, so CPL3 can execute the same code.
    static func writeGuest(into memory: GuestMemory) throws {
        try memory.writeBytes(loopCode, to: GuestAddress(codeAddress))
        var gdtBytes: [UInt8] = []
        for entry in gdt { gdtBytes += withUnsafeBytes(of: entry.littleEndian, Array.init) }
        try memory.writeBytes(gdtBytes, to: GuestAddress(gdtAddress))
        let present: UInt64 = 1 << 0, writable: UInt64 = 1 << 1, user: UInt64 = 1 << 2
        let flags = present | writable | user
        let pdpt = pml4Address + 0x1000, pd = pml4Address + 0x2000, pt = pml4Address + 0x3000
        var entries: [(UInt64, UInt64)] = [(pml4Address, pdpt | flags), (pdpt, pd | flags), (pd, pt | flags)]
        for page in stride(from: UInt64(0), to: memorySize, by: 0x1000) {
            entries.append((pt + page / 0x1000 * 8, page | flags))
        }
        for (address, value) in entries {
            try memory.writeBytes(withUnsafeBytes(of: value.littleEndian, Array.init), to: GuestAddress(address))
        }
    }
}

/// Why the CPL3 half of the probe could not run.
public struct ProbeFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}
