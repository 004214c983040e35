import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A vCPU file descriptor and its kvm_run area. Used by one thread at a time (its vCPU thread);
/// other threads interrupt it through a `VCPUKicker`.
public final class VCPU: @unchecked Sendable {
    public let id: Int
    let fd: FileDescriptor
    let runArea: UnsafeMutablePointer<kvm_run>
    let runSize: Int
    private var pendingIO: ckvm_io_exit?

    init(id: Int, fd: FileDescriptor, run: UnsafeMutableRawPointer, runSize: Int) {
        self.id = id
        self.fd = fd
        self.runArea = run.bindMemory(to: kvm_run.self, capacity: 1)
        self.runSize = runSize
    }

    deinit { munmap(UnsafeMutableRawPointer(runArea), runSize) }

    /// A handle other threads use to force this vCPU out of KVM_RUN.
    public func makeKicker() -> VCPUKicker { VCPUKicker(run: UInt(bitPattern: UnsafeMutableRawPointer(runArea))) }

    /// Enters the guest until the next exit that needs userspace.
    public func run() throws(KVMError) -> VCPUExit {
        pendingIO = nil
        if ckvm_ioctl_none(fd.raw, CKVM_RUN) < 0 {
            let err = errno
            if err == EINTR || err == EAGAIN {
                ckvm_run_set_immediate_exit(runArea, 0)
                return .interrupted
            }
            throw KVMError.ioctlFailed("KVM_RUN", errno: err)
        }
        return decodeExit()
    }

    private func decodeExit() -> VCPUExit {
        let reason = ckvm_run_exit_reason(runArea)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = ckvm_run_io(runArea)
            // Validate the data window KVM describes before anyone indexes into it.
            let bytes = Int(io.size) * Int(io.count)
            guard io.size == 1 || io.size == 2 || io.size == 4, io.count >= 1,
                  io.data_offset < UInt64(runSize), bytes <= runSize - Int(io.data_offset) else {
                return .internalError(suberror: UInt32.max, data: [UInt64(io.port), UInt64(io.size), UInt64(io.count)])
            }
            pendingIO = io
            return io.direction == UInt8(KVM_EXIT_IO_OUT)
                ? .ioOut(port: io.port, size: Int(io.size), count: Int(io.count))
                : .ioIn(port: io.port, size: Int(io.size), count: Int(io.count))
        case KVM_EXIT_MMIO:
            let mmio = ckvm_run_mmio(runArea)
            let size = Int(min(mmio.len, 8))
            if mmio.is_write != 0 {
                var value: UInt64 = 0
                withUnsafeBytes(of: mmio.data) { raw in
                    for i in 0..<size { value |= UInt64(raw[i]) << (8 * UInt64(i)) }
                }
                return .mmioWrite(address: mmio.phys_addr, size: size, value: value)
            }
            return .mmioRead(address: mmio.phys_addr, size: size)
        case KVM_EXIT_HLT: return .halted
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_DEBUG: return .debug
        case KVM_EXIT_EXCEPTION: return .exception(number: ckvm_run_ex_exception(runArea))
        case KVM_EXIT_FAIL_ENTRY: return .failedEntry(hardwareReason: ckvm_run_fail_entry_reason(runArea))
        case KVM_EXIT_SYSTEM_EVENT:
            let event = ckvm_run_system_event(runArea)
            switch Int32(event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .systemEvent(.shutdown)
            case KVM_SYSTEM_EVENT_RESET: return .systemEvent(.reset)
            case KVM_SYSTEM_EVENT_CRASH: return .systemEvent(.crash)
            default: return .systemEvent(.other(event.type))
            }
        case KVM_EXIT_INTERNAL_ERROR:
            let internalExit = ckvm_run_internal(runArea)
            if internalExit.suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION) {
                let failure = ckvm_run_emulation_failure(runArea)
                var bytes: [UInt8] = []
                // flags bit 0 (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) says the bytes are valid.
                if failure.ndata >= 3, failure.flags & 1 != 0 {
                    bytes = withUnsafeBytes(of: failure.insn_bytes) { Array($0.prefix(Int(failure.insn_size))) }
                }
                let count = Int(min(internalExit.ndata, 16))
                let data = withUnsafeBytes(of: internalExit.data) { raw in (0..<count).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) } }
                return .emulationFailure(EmulationFailure(instructionBytes: bytes, data: data))
            }
            let count = Int(min(internalExit.ndata, 16))
            let data = withUnsafeBytes(of: internalExit.data) { raw in (0..<count).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) } }
            return .internalError(suberror: internalExit.suberror, data: data)
        default:
            return .unknown(reason: reason)
        }
    }

    private func ioPointer(at index: Int) -> UnsafeMutableRawPointer? {
        guard let io = pendingIO, index >= 0, index < Int(io.count) else { return nil }
        return UnsafeMutableRawPointer(runArea) + Int(io.data_offset) + index * Int(io.size)
    }

    /// Value `index` of the current port-write exit (0 when out of range).
    public func ioValue(at index: Int = 0) -> UInt64 {
        guard let io = pendingIO, let pointer = ioPointer(at: index) else { return 0 }
        switch io.size {
        case 1: return UInt64(pointer.load(as: UInt8.self))
        case 2: return UInt64(pointer.loadUnaligned(as: UInt16.self))
        default: return UInt64(pointer.loadUnaligned(as: UInt32.self))
        }
    }

    /// Answers value `index` of the current port-read exit.
    public func setIOValue(_ value: UInt64, at index: Int = 0) {
        guard let io = pendingIO, let pointer = ioPointer(at: index) else { return }
        switch io.size {
        case 1: pointer.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
        case 2: pointer.storeBytes(of: UInt16(truncatingIfNeeded: value), toByteOffset: 0, as: UInt16.self)
        default: pointer.storeBytes(of: UInt32(truncatingIfNeeded: value), toByteOffset: 0, as: UInt32.self)
        }
    }

    /// Answers the current MMIO read exit.
    public func completeMMIORead(_ value: UInt64, size: Int) {
        var little = value.littleEndian
        withUnsafeBytes(of: &little) { raw in
            ckvm_run_set_mmio_data(runArea, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(min(max(size, 0), 8)))
        }
    }

    // MARK: Registers

    public func getRegisters() throws(KVMError) -> Registers {
        var regs = kvm_regs()
        _ = try retryingEINTR("KVM_GET_REGS") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_REGS, &regs) }
        return Registers(regs)
    }

    public func setRegisters(_ registers: Registers) throws(KVMError) {
        var regs = registers.kvm
        _ = try retryingEINTR("KVM_SET_REGS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_REGS, &regs) }
    }

    public func getSpecialRegisters() throws(KVMError) -> SpecialRegisters {
        var sregs = kvm_sregs()
        _ = try retryingEINTR("KVM_GET_SREGS") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_SREGS, &sregs) }
        return SpecialRegisters(sregs)
    }

    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(KVMError) {
        var sregs = registers.kvm
        _ = try retryingEINTR("KVM_SET_SREGS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_SREGS, &sregs) }
    }

    public func setCPUID(_ entries: [KVMCPUIDEntry]) throws(KVMError) {
        guard let cpuid = ckvm_cpuid2_alloc(UInt32(entries.count)) else { throw KVMError.mmapFailed(errno: ENOMEM) }
        defer { free(cpuid) }
        let out = ckvm_cpuid2_entries(cpuid)!
        for (i, e) in entries.enumerated() {
            var entry = kvm_cpuid_entry2()
            entry.function = e.function; entry.index = e.index; entry.flags = e.flags
            entry.eax = e.eax; entry.ebx = e.ebx; entry.ecx = e.ecx; entry.edx = e.edx
            out[i] = entry
        }
        _ = try retryingEINTR("KVM_SET_CPUID2") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_CPUID2, cpuid) }
    }

    /// Queues exception `vector` for delivery on the next entry (used to inject #BP for int3).
    public func injectException(_ vector: UInt8, errorCode: UInt32? = nil) throws(KVMError) {
        var events = kvm_vcpu_events()
        _ = try retryingEINTR("KVM_GET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_VCPU_EVENTS, &events) }
        events.exception.injected = 1
        events.exception.nr = vector
        events.exception.has_error_code = errorCode == nil ? 0 : 1
        events.exception.error_code = errorCode ?? 0
        events.flags = 0
        _ = try retryingEINTR("KVM_SET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_VCPU_EVENTS, &events) }
    }
}

/// Forces a vCPU thread out of KVM_RUN: sets immediate_exit (so a kick that lands just before
/// KVM_RUN is not lost) and signals the thread (so a guest running right now exits with EINTR).
public struct VCPUKicker: Sendable {
    let run: UInt

    public func kick(thread: pthread_t) {
        if let pointer = UnsafeMutableRawPointer(bitPattern: run) {
            ckvm_run_set_immediate_exit(pointer.assumingMemoryBound(to: kvm_run.self), 1)
        }
        pthread_kill(thread, ckvm_vcpu_kick_signal())
    }

    /// Must be called once per process before kicking.
    public static func installSignalHandler() { _ = ckvm_install_kick_handler() }

    /// Must be called on each vCPU thread before its first KVM_RUN: the kick signal has to be
    /// deliverable there whatever mask the thread inherited.
    public static func prepareVCPUThread(id: Int) {
        _ = ckvm_unblock_kick_signal()
        _ = ckvm_set_thread_name("vcpu\(id)")
    }
}

extension VCPUKicker {
    /// Sets immediate_exit without signalling: the next KVM_RUN completes pending I/O and returns.
    public func setImmediateExit() {
        if let pointer = UnsafeMutableRawPointer(bitPattern: run) {
            ckvm_run_set_immediate_exit(pointer.assumingMemoryBound(to: kvm_run.self), 1)
        }
    }
}
