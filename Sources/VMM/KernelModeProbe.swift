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
    /// Runs per privilege level before the last figure is taken as it is (bounds the probe's time).
    static let maximumRuns = 5

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
        let kernelMode = try measure(on: vcpu, privilege: .kernel)
        let userMode: Result<LoopTiming, ProbeFailure>
        do {
            userMode = .success(try measure(on: vcpu, privilege: .user))
        } catch {
            userMode = .failure(ProbeFailure(description: "\(error)"))
        }
        return KernelModeProbeResult(kernelMode: kernelMode, userMode: userMode)
    }

    enum Privilege: UInt8 {
        case kernel = 0, user = 3
    }

    /// Runs the loop at one privilege level until its own time (the run's time less that of an
    /// empty run) is long enough to trust.
    static func measure(on vcpu: VCPU, privilege: Privilege) throws -> LoopTiming {
        try vcpu.setSpecialRegisters(specialRegisters(from: try vcpu.getSpecialRegisters(), privilege: privilege))
        _ = try runLoop(on: vcpu, iterations: 1)            // warm-up: first entry, page faults
        let emptyRun = try runLoop(on: vcpu, iterations: 1)  // what entry and exit alone cost
        let wanted = min(max(minimumLoopSeconds, 10 * emptyRun), maximumLoopSeconds)
        var iterations = initialIterations
        var timing = LoopTiming(iterations: 0, seconds: 0)
        for _ in 0..<maximumRuns {
            let loopSeconds = max(try runLoop(on: vcpu, iterations: iterations) - emptyRun, 1e-9)
            timing = LoopTiming(iterations: Int(iterations), seconds: loopSeconds)
            guard loopSeconds < wanted, iterations < UInt32.max else { break }
            // At most 100x per step: a loop time lost in the jitter must not ask for hours of CPL0.
            let scaled = Double(iterations) * min(2 * wanted / loopSeconds, 100)
            iterations = UInt32(min(scaled.rounded(.up), Double(UInt32.max)))
        }
        return timing
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
