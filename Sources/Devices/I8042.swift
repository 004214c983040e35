import Synchronization

/// Captured state of the i8042 keyboard controller.
public struct I8042State: Codable, Sendable, Equatable {
    /// The controller configuration byte ("CTR"): interrupt enables, port disables, translation.
    public var commandByte: UInt8
    /// Output port (bit 0: CPU not in reset, bit 1: A20 gate).
    public var outputPort: UInt8
    /// The one-byte output buffer the guest reads at port 0x60.
    public var outputBuffer: UInt8
    public var outputBufferFull: Bool
    /// The buffered byte came from the auxiliary (mouse) side.
    public var outputFromAux: Bool
    /// The last device transfer timed out (no keyboard or mouse is attached).
    public var timeoutError: Bool
    /// Status bit 3: the last write went to the command port.
    public var lastWriteWasCommand: Bool
    /// A controller command still waiting for its data byte at port 0x60.
    public var pendingCommand: UInt8?

    public init() {
        commandByte = I8042.ctrKeyboardInterrupt | I8042.ctrAuxInterrupt | I8042.ctrSystemFlag | I8042.ctrTranslate
        outputPort = I8042.outputNotInReset | I8042.outputA20
        outputBuffer = 0
        outputBufferFull = false
        outputFromAux = false
        timeoutError = false
        lastWriteWasCommand = false
        pendingCommand = nil
    }

    public func validate() throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: "i8042", field: field, problem: problem)
        }
        if let command = pendingCommand, !I8042.commandTakesData(command) {
            throw bad("pendingCommand", "\(command.hex) is not a command that takes a data byte")
        }
        if !outputBufferFull && (outputFromAux || timeoutError) {
            throw bad("outputBufferFull", "is false while aux/timeout flags describe a buffered byte")
        }
        if outputPort & I8042.outputNotInReset == 0 {
            throw bad("outputPort", "\(outputPort.hex) holds the CPU in reset")
        }
    }
}

/// The PS/2 controller at ports 0x60 (data) and 0x64 (status/command): enough of it for Linux's
/// i8042 driver to find and test it, and for a reset request (command 0xFE, or clearing output
/// port bit 0) to reach the VMM. No keyboard or mouse is attached: bytes sent to them are
/// answered with a timeout, as a real controller does for an empty socket.
///
/// Insert `dataPort` at 0x60 and `commandPort` at 0x64, each one port long.
public final class I8042: Sendable {
    static let ctrKeyboardInterrupt: UInt8 = 0x01
    static let ctrAuxInterrupt: UInt8 = 0x02
    static let ctrSystemFlag: UInt8 = 0x04
    static let ctrKeyboardDisabled: UInt8 = 0x10
    static let ctrAuxDisabled: UInt8 = 0x20
    static let ctrTranslate: UInt8 = 0x40
    static let outputNotInReset: UInt8 = 0x01
    static let outputA20: UInt8 = 0x02

    static func commandTakesData(_ command: UInt8) -> Bool {
        (0x60...0x7F).contains(command) || (0xD1...0xD4).contains(command)
    }

    private let controller: I8042Controller
    public let dataPort: Port
    public let commandPort: Port

    /// `keyboardInterrupt` is IRQ 1 and `auxInterrupt` IRQ 12; without them Linux still finds the
    /// controller, only waits out its interrupt tests.
    public convenience init(
        events: any MachineEventSink, keyboardInterrupt: (any InterruptLine)? = nil,
        auxInterrupt: (any InterruptLine)? = nil
    ) {
        self.init(validState: I8042State(), events: events, keyboardInterrupt: keyboardInterrupt, auxInterrupt: auxInterrupt)
    }

    public convenience init(
        restoring state: I8042State, events: any MachineEventSink,
        keyboardInterrupt: (any InterruptLine)? = nil, auxInterrupt: (any InterruptLine)? = nil
    ) throws(DeviceStateError) {
        try state.validate()
        self.init(validState: state, events: events, keyboardInterrupt: keyboardInterrupt, auxInterrupt: auxInterrupt)
    }

    private init(
        validState: I8042State, events: any MachineEventSink,
        keyboardInterrupt: (any InterruptLine)?, auxInterrupt: (any InterruptLine)?
    ) {
        controller = I8042Controller(
            state: validState, events: events, keyboardInterrupt: keyboardInterrupt, auxInterrupt: auxInterrupt)
        dataPort = Port(kind: .data, controller: controller)
        commandPort = Port(kind: .command, controller: controller)
    }

    public var state: I8042State { controller.state }

    /// Machine reset: the controller returns to its power-on state.
    public func reset() { controller.reset() }

    /// One of the controller's two ports on the bus.
    public final class Port: BusDevice {
        enum Kind { case data, command }
        let kind: Kind
        let controller: I8042Controller

        init(kind: Kind, controller: I8042Controller) {
            self.kind = kind
            self.controller = controller
        }

        public func read(offset: UInt64, size: Int) -> UInt64 {
            UInt64(kind == .data ? controller.readData() : controller.readStatus())
        }

        public func write(offset: UInt64, size: Int, value: UInt64) {
            let byte = UInt8(truncatingIfNeeded: value)
            if kind == .data { controller.writeData(byte) } else { controller.writeCommand(byte) }
        }
    }
}

/// The controller behind both ports.
final class I8042Controller: Sendable {
    private struct Locked {
        var registers: I8042State
        var keyboardLineHigh: Bool
        var auxLineHigh: Bool
    }

    private let locked: Mutex<Locked>
    private let events: any MachineEventSink
    private let keyboardInterrupt: (any InterruptLine)?
    private let auxInterrupt: (any InterruptLine)?

    init(
        state: I8042State, events: any MachineEventSink,
        keyboardInterrupt: (any InterruptLine)?, auxInterrupt: (any InterruptLine)?
    ) {
        let lines = Self.lineLevels(state)
        locked = Mutex(Locked(registers: state, keyboardLineHigh: lines.keyboard, auxLineHigh: lines.aux))
        self.events = events
        self.keyboardInterrupt = keyboardInterrupt
        self.auxInterrupt = auxInterrupt
        keyboardInterrupt?.setLevel(lines.keyboard)
        auxInterrupt?.setLevel(lines.aux)
    }

    var state: I8042State { locked.withLock { $0.registers } }

    func reset() {
        withRegisters { $0 = I8042State() }
    }

    /// The keyboard line follows a buffered keyboard byte, the aux line a buffered aux byte,
    /// each gated by its interrupt enable in the command byte.
    private static func lineLevels(_ registers: I8042State) -> (keyboard: Bool, aux: Bool) {
        let full = registers.outputBufferFull
        return (
            keyboard: full && !registers.outputFromAux && registers.commandByte & I8042.ctrKeyboardInterrupt != 0,
            aux: full && registers.outputFromAux && registers.commandByte & I8042.ctrAuxInterrupt != 0
        )
    }

    func readStatus() -> UInt8 {
        locked.withLock { locked in
            let registers = locked.registers
            var status: UInt8 = 0x10  // bit 4: keyboard not inhibited
            if registers.outputBufferFull { status |= 0x01 }
            if registers.commandByte & I8042.ctrSystemFlag != 0 { status |= 0x04 }
            if registers.lastWriteWasCommand { status |= 0x08 }
            if registers.outputBufferFull && registers.outputFromAux { status |= 0x20 }
            if registers.outputBufferFull && registers.timeoutError { status |= 0x40 }
            return status
        }
    }

    func readData() -> UInt8 {
        withRegisters { registers in
            registers.outputBufferFull = false
            registers.outputFromAux = false
            registers.timeoutError = false
            return registers.outputBuffer  // a real 8042 keeps returning the last byte
        }
    }

    func writeCommand(_ command: UInt8) {
        var resetRequested = false
        withRegisters { registers in
            registers.lastWriteWasCommand = true
            registers.pendingCommand = nil
            switch command {
            case 0x20...0x3F:
                // Read controller RAM; only byte 0 (the command byte) means anything here.
                registers.respond(command == 0x20 ? registers.commandByte : 0)
            case _ where I8042.commandTakesData(command):
                registers.pendingCommand = command
            case 0xA7: registers.commandByte |= I8042.ctrAuxDisabled
            case 0xA8: registers.commandByte &= ~I8042.ctrAuxDisabled
            case 0xA9, 0xAB: registers.respond(0x00)  // aux / keyboard interface test: no fault
            case 0xAA:
                registers.commandByte |= I8042.ctrSystemFlag
                registers.respond(0x55)  // self-test passed
            case 0xAD: registers.commandByte |= I8042.ctrKeyboardDisabled
            case 0xAE: registers.commandByte &= ~I8042.ctrKeyboardDisabled
            case 0xC0: registers.respond(0x00)  // input port
            case 0xD0: registers.respond(registers.outputPort)
            case 0xF0...0xFF:
                // Pulse output port bits whose command bit is 0; bit 0 is the CPU reset line.
                resetRequested = command & 0x01 == 0
            default:
                break  // unknown commands are ignored, as by real controllers
            }
        }
        if resetRequested { events.machineEvent(.reset) }
    }

    func writeData(_ byte: UInt8) {
        var resetRequested = false
        withRegisters { registers in
            registers.lastWriteWasCommand = false
            let command = registers.pendingCommand
            registers.pendingCommand = nil
            switch command {
            case 0x60?:
                registers.commandByte = byte
            case (0x61...0x7F)?:
                break  // controller RAM beyond the command byte is not modelled
            case 0xD1?:
                registers.outputPort = byte | I8042.outputNotInReset
                resetRequested = byte & I8042.outputNotInReset == 0
            case 0xD2?:
                registers.respond(byte)  // as if the keyboard had sent it
            case 0xD3?:
                registers.respond(byte, fromAux: true)  // as if the mouse had sent it
            case 0xD4?:
                registers.respond(0xFE, fromAux: true, timeout: true)  // no mouse attached
            default:
                registers.respond(0xFE, timeout: true)  // no keyboard attached
            }
        }
        if resetRequested { events.machineEvent(.reset) }
    }

    /// Every access goes through here so both lines follow each state change.
    @discardableResult
    private func withRegisters<Result>(_ body: (inout I8042State) -> Result) -> Result {
        locked.withLock { locked in
            let result = body(&locked.registers)
            let lines = Self.lineLevels(locked.registers)
            if lines.keyboard != locked.keyboardLineHigh {
                locked.keyboardLineHigh = lines.keyboard
                keyboardInterrupt?.setLevel(lines.keyboard)
            }
            if lines.aux != locked.auxLineHigh {
                locked.auxLineHigh = lines.aux
                auxInterrupt?.setLevel(lines.aux)
            }
            return result
        }
    }
}

extension I8042State {
    mutating func respond(_ byte: UInt8, fromAux: Bool = false, timeout: Bool = false) {
        outputBuffer = byte
        outputBufferFull = true
        outputFromAux = fromAux
        timeoutError = timeout
    }
}
