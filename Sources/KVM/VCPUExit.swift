/// Why KVM_RUN returned, decoded. Nobody outside this module touches the kvm_run union.
public enum VCPUExit: Equatable, Sendable {
    /// Port read: answer each of `count` values with `VCPU.setIOValue(_:at:)` before the next run.
    case ioIn(port: UInt16, size: Int, count: Int)
    /// Port write: read the `count` values with `VCPU.ioValue(at:)`.
    case ioOut(port: UInt16, size: Int, count: Int)
    /// MMIO read: answer with `VCPU.completeMMIORead(_:)` before the next run.
    case mmioRead(address: UInt64, size: Int)
    case mmioWrite(address: UInt64, size: Int, value: UInt64)
    /// HLT without an in-kernel LAPIC (never seen with the irqchip).
    case halted
    /// Triple fault or similar: the guest asked for a reset the hard way.
    case shutdown
    case systemEvent(SystemEvent)
    /// KVM_RUN was interrupted by a kick (pause, stop) or immediate_exit.
    case interrupted
    /// The instruction emulator could not execute an instruction.
    case emulationFailure(EmulationFailure)
    case internalError(suberror: UInt32, data: [UInt64])
    case failedEntry(hardwareReason: UInt64)
    case exception(number: UInt32)
    case debug
    case unknown(reason: UInt32)
}

public enum SystemEvent: Equatable, Sendable {
    case shutdown, reset, crash, other(UInt32)
}

/// KVM_INTERNAL_ERROR_EMULATION with the bytes the emulator choked on.
public struct EmulationFailure: Equatable, Sendable, CustomStringConvertible {
    /// Instruction bytes when KVM supplied them (empty otherwise).
    public var instructionBytes: [UInt8]
    public var data: [UInt64]

    public var description: String {
        instructionBytes.isEmpty ? "no instruction bytes" : instructionBytes.map { String(format2: $0) }.joined(separator: " ")
    }
}

extension String {
    init(format2 byte: UInt8) {
        let digits = String(byte, radix: 16)
        self = digits.count == 1 ? "0" + digits : digits
    }
}
