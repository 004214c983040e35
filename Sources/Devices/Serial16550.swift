import Synchronization

/// Where the UART's transmitted bytes go (the terminal, a log, a test recorder). Called on the
/// vCPU thread that wrote THR, outside the device lock; it must not block for long.
public protocol SerialOutput: Sendable {
    func emit(_ byte: UInt8)
}

/// A 16550A UART as on a PC's COM1 (0x3F8, 8 ports, IRQ 4). Linux's 8250 driver detects it as a
/// 16550A and drives it by interrupt. Host input enters through `enqueueInput`, bounded by the
/// receive FIFO; the caller keeps what was not accepted and retries after `onInputSpace` fires.
public final class Serial16550: BusDevice {
    /// COM1's place on a PC: ports 0x3F8-0x3FF, ISA IRQ 4.
    public static let com1Port: UInt64 = 0x3F8
    public static let com1IRQ = 4
    public static let portCount: UInt64 = 8

    private struct Locked {
        var registers: Serial16550State
        var lineHigh: Bool
    }

    private let locked: Mutex<Locked>
    private let interrupt: any InterruptLine
    private let output: any SerialOutput
    private let onInputSpace: (@Sendable () -> Void)?

    /// Power-on state. `onInputSpace` is called (outside the lock) when the receiver goes from
    /// full to having room, so a host reader waiting on a full FIFO knows to retry.
    public convenience init(
        interrupt: any InterruptLine, output: any SerialOutput,
        onInputSpace: (@Sendable () -> Void)? = nil
    ) {
        self.init(validState: Serial16550State(), interrupt: interrupt, output: output, onInputSpace: onInputSpace)
    }

    /// Rebuilds the device from a captured state, refusing one the chip could not be in.
    public convenience init(
        restoring state: Serial16550State, interrupt: any InterruptLine, output: any SerialOutput,
        onInputSpace: (@Sendable () -> Void)? = nil
    ) throws(DeviceStateError) {
        try state.validate()
        self.init(validState: state, interrupt: interrupt, output: output, onInputSpace: onInputSpace)
    }

    private init(
        validState: Serial16550State, interrupt: any InterruptLine, output: any SerialOutput,
        onInputSpace: (@Sendable () -> Void)?
    ) {
        let high = validState.interruptLineHigh
        self.locked = Mutex(Locked(registers: validState, lineHigh: high))
        self.interrupt = interrupt
        self.output = output
        self.onInputSpace = onInputSpace
        interrupt.setLevel(high)
    }

    public var state: Serial16550State { locked.withLock { $0.registers } }

    /// Bytes the receiver can take now (0 while in loopback, when the line is disconnected).
    public var inputSpace: Int { locked.withLock { $0.registers.inputSpace } }

    /// Offers host input; returns how many leading bytes were accepted. Never drops: what does
    /// not fit stays with the caller.
    public func enqueueInput(_ bytes: some Collection<UInt8>) -> Int {
        withRegisters { registers in
            let accepted = min(registers.inputSpace, bytes.count)
            for byte in bytes.prefix(accepted) { registers.receive(byte) }
            return accepted
        }
    }

    /// Machine reset: back to power-on register values, pending input discarded.
    public func reset() {
        withRegisters { $0 = Serial16550State() }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        readBytewise(offset: offset, size: size) { register in
            withRegisters { $0.readRegister(register) }
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        writeBytewise(offset: offset, size: size, value: value) { register, byte in
            if let transmitted = withRegisters({ $0.writeRegister(register, byte) }) {
                output.emit(transmitted)
            }
        }
    }

    /// Every register access goes through here so the interrupt line follows each state change
    /// (driven inside the lock, so racing vCPUs cannot leave it at a stale level).
    private func withRegisters<Result>(_ body: (inout Serial16550State) -> Result) -> Result {
        let (result, spaceAppeared) = locked.withLock { locked in
            let hadSpace = locked.registers.inputSpace > 0
            let result = body(&locked.registers)
            let high = locked.registers.interruptLineHigh
            if high != locked.lineHigh {
                locked.lineHigh = high
                interrupt.setLevel(high)
            }
            return (result, !hadSpace && locked.registers.inputSpace > 0)
        }
        if spaceAppeared { onInputSpace?() }
        return result
    }
}
