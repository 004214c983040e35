import GuestMemory
import KVM
import Devices
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a vCPU thread has been asked to do and what it is doing.
struct VCPUControl {
    enum Request: Equatable { case run, pause, stop }
    var request: Request = .run
    var parked = false
    var finished = false
    /// Work another thread asked the parked vCPU thread to do (capture or load its state): only
    /// the vCPU's own thread issues ioctls on it.
    var job: VCPUJob?
    /// Jobs handed over and jobs finished, so a caller knows when its own job is done.
    var jobsPosted: UInt64 = 0
    var jobsDone: UInt64 = 0
}

/// Where a job's result waits for the thread that posted it.
final class JobOutcome<T>: @unchecked Sendable {
    var value: Result<T, any Error>?
}

/// One request on the vCPU channel: runs on the vCPU thread, with the vCPU parked.
final class VCPUJob: @unchecked Sendable {
    let body: (VCPU) -> Void
    init(_ body: @escaping (VCPU) -> Void) { self.body = body }
}

/// Everything a vCPU thread needs from its machine, shared by all vCPUs.
struct ExitContext: Sendable {
    let pioBus: Bus
    let mmioBus: Bus
    let profile: HostProfile
    /// Guest RAM, for fixups that read guest memory (ProtectedModeIret).
    let memory: GuestMemory
    let requestExit: @Sendable (MachineExit) -> Void
    /// True once the machine has an outcome: vCPUs stop at their next exit instead of re-entering.
    let isExiting: @Sendable () -> Bool
    /// One-line notes for the operator (what a triple fault looked like).
    var log: @Sendable (String) -> Void = { _ in }
}

/// One vCPU on its own OS thread, with a Running/Paused/Stopped state machine driven through
/// `control`. Pausing parks the thread outside KVM_RUN after completing any pending I/O, so the
/// vCPU's registers are consistent (KVM API: "immediate_exit" before saving state).
final class VCPURunner: @unchecked Sendable {
    let vcpu: VCPU
    private let context: ExitContext
    let control = Guarded(VCPUControl())
    /// Set (under `control`'s lock) whenever a request is posted: the exit path reads this one
    /// atomic instead of taking the lock on every exit.
    private let requestPosted = Atomic<Bool>(true)
    private let kicker: VCPUKicker
    private var thread: pthread_t?
    /// Exits handled, for stats (read from other threads, hence atomic).
    private let exits = Atomic<UInt64>(0)
    var exitCount: UInt64 { exits.load(ordering: .relaxed) }
    /// The same exits by reason (port, MMIO page, kind): where a guest's exits go.
    let exitReasons = ExitAccounting()

    init(vcpu: VCPU, context: ExitContext) {
        self.vcpu = vcpu
        self.context = context
        self.kicker = vcpu.makeKicker()
    }

    func start() -> Bool {
        thread = startThread(name: "vcpu\(vcpu.id)") { [self] in loop() }
        return thread != nil
    }

    /// Asks the thread to move to `request` and forces it out of the guest.
    func request(_ request: VCPUControl.Request) {
        control.update {
            $0.request = request
            requestPosted.store(true, ordering: .releasing)
        }
        if let thread { kicker.kick(thread: thread) }
    }

    /// Runs `body` on this vCPU's own thread while it is parked, and returns its result: the
    /// channel through which pause-time work (state capture for snapshots) reaches a vCPU.
    func perform<T>(timeoutSeconds: Double = 10, _ body: @escaping (VCPU) throws -> T) throws -> T {
        let outcome = JobOutcome<T>()
        let job = VCPUJob { vcpu in outcome.value = Result { try body(vcpu) } }
        let ticket: UInt64? = control.update { control in
            guard control.parked, !control.finished, control.job == nil else { return nil }
            control.job = job
            control.jobsPosted &+= 1
            return control.jobsPosted
        }
        guard let ticket else { throw MachineError.notPaused }
        let done = control.wait(until: { $0.jobsDone >= ticket || $0.finished }, timeoutSeconds: timeoutSeconds) { $0.jobsDone >= ticket }
        guard done == true, let value = outcome.value else { throw MachineError.vcpuUnresponsive(vcpu: vcpu.id) }
        return try value.get()
    }

    func waitParked(timeoutSeconds: Double) -> Bool {
        control.wait(until: { $0.parked || $0.finished }, timeoutSeconds: timeoutSeconds) { _ in true } ?? false
    }

    func waitRunning(timeoutSeconds: Double) {
        _ = control.wait(until: { !$0.parked || $0.finished }, timeoutSeconds: timeoutSeconds) { _ in true }
    }

    func join() {
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func loop() {
        VCPUKicker.prepareVCPUThread(id: vcpu.id)
        confineCurrentThread(as: .vcpu)
        defer { control.update { $0.finished = true; $0.parked = false } }
        while true {
            if requestPosted.load(ordering: .acquiring) {
                // Read and acknowledge together, so a request posted meanwhile is never lost.
                let request = control.update { control -> VCPUControl.Request in
                    requestPosted.store(false, ordering: .relaxed)
                    return control.request
                }
                if request == .stop { return }
                if request == .pause {
                    park()
                    requestPosted.store(true, ordering: .releasing)  // look again after parking
                    continue
                }
            }
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                context.requestExit(.failed("vCPU \(vcpu.id): \(error)"))
                return
            }
            exits.wrappingAdd(1, ordering: .relaxed)
            exitReasons.count(exit)
            if !handle(exit) { return }
            // A device may just have ended the machine (debug exit, reset): don't run the guest on.
            if context.isExiting() { return }
        }
    }

    /// Completes in-flight I/O (one KVM_RUN with immediate_exit set), then sleeps until told otherwise.
    private func park() {
        vcpu.makeKicker().setImmediateExit()
        _ = try? vcpu.run()
        control.update { $0.parked = true }
        while true {
            // Leave when told to; run what the channel brings in the meantime.
            let job = control.wait(until: { $0.request != .pause || $0.job != nil }) { control -> VCPUJob? in
                if let job = control.job { control.job = nil; return job }
                control.parked = false
                return nil
            } ?? nil
            guard let job else { return }
            job.body(vcpu)
            control.update { $0.jobsDone &+= 1 }
        }
    }

    /// Handles one exit; returns false when this vCPU must stop.
    private func handle(_ exit: VCPUExit) -> Bool {
        switch exit {
        case let .ioOut(port, size, count):
            for index in 0..<count {
                context.pioBus.write(address: UInt64(port), size: size, value: vcpu.ioValue(at: index))
            }
        case let .ioIn(port, size, count):
            for index in 0..<count {
                // Nothing claims the port: the ISA bus floats high.
                let value = context.pioBus.read(address: UInt64(port), size: size) ?? allOnes(size)
                vcpu.setIOValue(value, at: index)
            }
        case let .mmioRead(address, size):
            vcpu.completeMMIORead(context.mmioBus.read(address: address, size: size) ?? allOnes(size), size: size)
        case let .mmioWrite(address, size, value):
            context.mmioBus.write(address: address, size: size, value: value)
        case .interrupted, .halted, .debug:
            break
        case .shutdown:
            // A triple fault resets a PC. The guest says nothing first, so say where it was.
            context.log("vCPU \(vcpu.id): triple fault (KVM_EXIT_SHUTDOWN): \(faultDescription()); the machine resets")
            context.requestExit(.reset)
        case let .systemEvent(event):
            switch event {
            case .reset: context.requestExit(.reset)
            case .shutdown: context.requestExit(.powerOff)
            case .crash: context.requestExit(.failed("vCPU \(vcpu.id): guest reported a crash (KVM_SYSTEM_EVENT_CRASH)"))
            case let .other(type): context.requestExit(.failed("vCPU \(vcpu.id): unknown KVM system event \(type)"))
            }
            return false
        case let .emulationFailure(failure):
            return handleEmulationFailure(failure)
        case let .internalError(suberror, data):
            context.requestExit(.failed("vCPU \(vcpu.id): KVM internal error \(suberror) at \(ripDescription()) (data \(data.map { "0x" + String($0, radix: 16) }))"))
            return false
        case let .failedEntry(reason):
            context.requestExit(.failed("vCPU \(vcpu.id): KVM could not enter the guest (hardware reason 0x\(String(reason, radix: 16))) at \(ripDescription())"))
            return false
        case let .exception(number):
            context.requestExit(.failed("vCPU \(vcpu.id): unexpected exception \(number) exit at \(ripDescription())"))
            return false
        case let .unknown(reason):
            context.requestExit(.failed("vCPU \(vcpu.id): unhandled KVM exit reason \(reason) at \(ripDescription())"))
            return false
        }
        return true
    }

    private func handleEmulationFailure(_ failure: EmulationFailure) -> Bool {
        let fixup = context.profile.fixup(for: failure.instructionBytes)
        do {
            switch fixup {
            case .injectBreakpoint:
                var registers = try vcpu.getRegisters()
                registers.rip &+= 1
                try vcpu.setRegisters(registers)
                try vcpu.injectException(3)
                return true
            case let .skipInstruction(length):
                var registers = try vcpu.getRegisters()
                registers.rip &+= length
                try vcpu.setRegisters(registers)
                return true
            case let .emulateIret(prefix):
                let registers = try vcpu.getRegisters(), special = try vcpu.getSpecialRegisters()
                let memory = context.memory
                let outcome: ProtectedModeIret.Outcome
                do {
                    outcome = try ProtectedModeIret.emulate(operandSizePrefix: prefix, registers: registers, special: special,
                                                            read: { try memory.readBytes(at: GuestAddress($0), count: $1) })
                } catch {
                    context.requestExit(.failed("vCPU \(vcpu.id): the KVM instruction emulator failed at \(ripDescription()), instruction bytes: \(failure) (\(error))"))
                    return false
                }
                try vcpu.setSpecialRegisters(outcome.special)
                try vcpu.setRegisters(outcome.registers)
                return true
            case let .fatal(hint):
                var report = "vCPU \(vcpu.id): the KVM instruction emulator failed at \(ripDescription()), instruction bytes: \(failure)"
                if let hint { report += " (\(hint))" }
                context.requestExit(.failed(report))
                return false
            }
        } catch {
            context.requestExit(.failed("vCPU \(vcpu.id): could not apply emulation fixup: \(error)"))
            return false
        }
    }

    /// The registers that say why a guest triple-faulted: where it ran, its paging and tables.
    /// On AMD, KVM has already put the vCPU through INIT when it reports the shutdown (the VMCB is
    /// undefined after one): the registers are then the reset values, and the report says so.
    private func faultDescription() -> String {
        guard let registers = try? vcpu.getRegisters(), let special = try? vcpu.getSpecialRegisters() else { return "registers unreadable" }
        if registers.rip == 0xFFF0, special.cs.base == 0xFFFF_0000, special.cr0 & 1 == 0 {
            return "registers already at their reset values (KVM on AMD re-initializes a vCPU on shutdown), so where it faulted is lost"
        }
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        let parts = ["RIP \(hex(registers.rip))", "RSP \(hex(registers.rsp))", "CPL \(special.cs.dpl)",
                     "CR0 \(hex(special.cr0))", "CR2 \(hex(special.cr2))", "CR3 \(hex(special.cr3))", "CR4 \(hex(special.cr4))",
                     "EFER \(hex(special.efer))", "IDT \(hex(special.idt.base))/\(hex(UInt64(special.idt.limit)))",
                     "GDT \(hex(special.gdt.base))/\(hex(UInt64(special.gdt.limit)))"]
        return parts.joined(separator: ", ")
    }

    private func ripDescription() -> String {
        guard let registers = try? vcpu.getRegisters(), let special = try? vcpu.getSpecialRegisters() else { return "unknown RIP" }
        return "RIP 0x\(String(registers.rip, radix: 16)) (CPL \(special.cs.dpl), CS 0x\(String(special.cs.selector, radix: 16)))"
    }
}

@inline(__always)
func allOnes(_ size: Int) -> UInt64 { size >= 8 ? UInt64.max : (UInt64(1) << (UInt64(size) * 8)) - 1 }
