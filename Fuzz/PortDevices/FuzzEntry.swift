// libFuzzer entry point for the port devices a guest drives directly: 16550 UART, i8042, CMOS
// RTC, ACPI PM, fw_cfg (with its DMA interface on a fake guest memory) and the debug-exit port.
// Each input is a sequence of 12-byte operations (device, offset, size, read/write, value) on
// fresh devices; then every device's state is captured and restored into a new device, which
// must accept it and report the same state (what a snapshot of a fuzzed guest relies on).
// Build and run with Fuzz/PortDevices/run.sh (swiftc -sanitize=fuzzer,address).
import Synchronization

private struct NoInterrupt: InterruptLine { func setLevel(_ high: Bool) {} }
private struct NoOutput: SerialOutput { func emit(_ byte: UInt8) {} }
private struct NoEvents: MachineEventSink { func machineEvent(_ event: MachineEvent) {} }

/// 1 MiB of guest memory for fw_cfg DMA; anything outside it is refused, as the VMM's is.
private final class FakeMemory: DMAMemory, @unchecked Sendable {
    let bytes = Mutex([UInt8](repeating: 0, count: 1 << 20))
    struct Outside: Error {}
    func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try bytes.withLock { memory in
            guard count >= 0, address <= UInt64(memory.count), UInt64(count) <= UInt64(memory.count) - address else { throw Outside() }
            return Array(memory[Int(address)..<Int(address) + count])
        }
    }
    func write(_ data: ArraySlice<UInt8>, at address: UInt64) throws {
        try bytes.withLock { memory in
            guard address <= UInt64(memory.count), UInt64(data.count) <= UInt64(memory.count) - address else { throw Outside() }
            memory.replaceSubrange(Int(address)..<Int(address) + data.count, with: data)
        }
    }
}

private let fixedClock: @Sendable () -> Duration = { .seconds(1_700_000_000) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let memory = FakeMemory()
    let serial = Serial16550(interrupt: NoInterrupt(), output: NoOutput())
    let i8042 = I8042(events: NoEvents(), keyboardInterrupt: NoInterrupt(), auxInterrupt: NoInterrupt())
    let rtc = CMOSRTC(memoryBelow4G: 512 << 20, memoryAbove4G: 0, cpuCount: 2, now: fixedClock)
    let pm = ACPIPM(events: NoEvents(), sci: NoInterrupt(), clock: fixedClock)
    guard let fwCfg = try? FwCfg(ramSize: 1 << 20, cpuCount: 2, dmaMemory: memory) else { fatalError("fw_cfg") }
    _ = try? fwCfg.addFile(name: "etc/fuzz", data: Array(repeating: 0x5A, count: 300))
    let debugExit = DebugExit(events: NoEvents())
    let targets: [(any BusDevice, UInt64)] = [
        (serial, 8), (i8042.dataPort, 1), (i8042.commandPort, 1), (rtc, 2), (pm, 12), (fwCfg, 2), (fwCfg.dmaPort, 8), (debugExit, 4),
    ]
    var at = 0
    while at + 12 <= size {
        let (device, length) = targets[Int(data[at]) % targets.count]
        let offset = UInt64(data[at + 1]) % length
        let width = 1 << Int(data[at + 2] % 4)
        var value: UInt64 = 0
        for byte in 0..<8 { value |= UInt64(data[at + 4 + byte]) << UInt64(8 * byte) }
        if data[at + 3] & 1 == 0 { _ = device.read(offset: offset, size: width) } else { device.write(offset: offset, size: width, value: value) }
        if data[at + 3] & 0x80 != 0 { _ = serial.enqueueInput([data[at + 4]]) }
        at += 12
    }
    // Whatever state the guest drove them into, a snapshot of it restores to the same state.
    do {
        let serialAgain = try Serial16550(restoring: serial.state, interrupt: NoInterrupt(), output: NoOutput())
        precondition(serialAgain.state == serial.state, "serial state changed across a restore")
        let i8042Again = try I8042(restoring: i8042.state, events: NoEvents())
        precondition(i8042Again.state == i8042.state, "i8042 state changed across a restore")
        let rtcAgain = try CMOSRTC(restoring: rtc.state, now: fixedClock)
        precondition(rtcAgain.state == rtc.state, "RTC state changed across a restore")
        let pmAgain = try ACPIPM(restoring: pm.state, events: NoEvents(), sci: NoInterrupt(), clock: fixedClock)
        precondition(pmAgain.state == pm.state, "ACPI PM state changed across a restore")
        let fwCfgAgain = try FwCfg(restoring: fwCfg.state, dmaMemory: memory)
        precondition(fwCfgAgain.state == fwCfg.state, "fw_cfg state changed across a restore")
    } catch {
        fatalError("a state the devices reached was refused on restore: \(error)")
    }
    return 0
}
