import KVM
import VMContract

/// `GET /vm/vcpus`: what each vCPU is doing, for the operator of a guest that stopped making
/// progress (a lost timer, a vCPU spinning or halted for good, a thread that never re-entered).
extension Machine {
    /// Reads every vCPU's thread state, then pauses the machine for a moment (unless paused
    /// already) to read the architectural state on each vCPU's own thread, and lets it run on.
    /// A vCPU that does not park within `pauseTimeoutSeconds` is reported with an error instead.
    func vcpuReports(pauseTimeoutSeconds: Double = 5) -> [VCPUReport] {
        var reports = runners.map { runner in
            let control = runner.control.read { $0 }
            let thread = control.finished ? "finished" : control.parked ? "parked" : "running"
            return VCPUReport(id: runner.vcpu.id, thread: thread, exits: runner.exitCount)
        }
        guard runState == .running || runState == .paused else { return reports }
        let wasPaused = runState == .paused
        var pauseError: String?
        if !wasPaused {
            do { try pause(timeoutSeconds: pauseTimeoutSeconds) } catch { pauseError = "\(error)" }
        }
        defer { if !wasPaused { resume() } }
        for (index, runner) in runners.enumerated() {
            guard runner.control.read({ $0.parked }) else {
                reports[index].error = pauseError ?? "not parked"
                continue
            }
            do {
                let state = try runner.perform(timeoutSeconds: pauseTimeoutSeconds) { try $0.captureState() }
                Self.describe(state, into: &reports[index])
            } catch {
                reports[index].error = "\(error)"
            }
        }
        return reports
    }

    static func describe(_ state: VCPUState, into report: inout VCPUReport) {
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        let sregs = state.specialRegisters
        report.mode = sregs.efer & (1 << 10) != 0 ? "long" : sregs.cr0 & 1 != 0 ? "protected" : "real"
        report.cpl = Int(sregs.ss.dpl)
        report.rip = hex(state.registers.rip)
        report.rflags = hex(state.registers.rflags)
        report.interruptsEnabled = state.registers.rflags & (1 << 9) != 0
        let mpStates = ["runnable", "uninitialized", "init_received", "halted", "sipi_received", "stopped",
                        "check_stop", "operating", "load"]
        report.mpState = Int(state.mpState) < mpStates.count ? mpStates[Int(state.mpState)] : "\(state.mpState)"
        // struct kvm_vcpu_events: exception at 0 (injected, nr, has_error_code, pending), interrupt
        // at 8 (injected, nr, soft, shadow), nmi at 12 (injected, pending, masked).
        var events: [String] = []
        let e = state.events
        if e.count >= 15 {
            if e[0] != 0 || e[3] != 0 { events.append("exception \(e[1]) \(e[0] != 0 ? "injected" : "pending")") }
            if e[8] != 0 { events.append("interrupt \(e[9]) injected") }
            if e[11] != 0 { events.append("interrupt shadow") }
            if e[12] != 0 { events.append("NMI injected") }
            if e[13] != 0 { events.append("NMI pending") }
            if e[14] != 0 { events.append("NMIs masked") }
        }
        report.pendingEvents = events
        if state.lapic.count >= 0x400 {
            func register(_ offset: Int) -> UInt32 {
                state.lapic.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
            }
            func vectors(_ base: Int) -> [Int] {
                (0..<256).filter { register(base + ($0 / 32) * 0x10) & (1 << UInt32($0 % 32)) != 0 }
            }
            let lvt = register(0x320)
            let mode = ["one-shot", "periodic", "tsc-deadline", "reserved"][Int((lvt >> 17) & 3)]
            report.lapicTimer = "\(mode), vector \(lvt & 0xFF)\(lvt & (1 << 16) != 0 ? ", masked" : ""), initial count \(register(0x380)), current count \(register(0x390)); APIC \(register(0xF0) & (1 << 8) != 0 ? "enabled" : "software-disabled"), TPR \(register(0x80))"
            report.lapicIRR = vectors(0x200)
            report.lapicISR = vectors(0x100)
        }
        if let tsc = state.msrs.first(where: { $0.index == 0x10 }) { report.tsc = hex(tsc.value) }
        if let deadline = state.msrs.first(where: { $0.index == tscDeadlineMSRIndex }) { report.tscDeadline = hex(deadline.value) }
    }

    static let tscDeadlineMSRIndex: UInt32 = 0x6E0
}
