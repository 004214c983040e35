import Devices
import Testing

@Suite struct PCIMSIXTests {
    let device = PCIDeviceAddress(device: 3)
    let message = MSIMessage(address: 0xFEE0_1000, data: 0x4041)

    /// Programs vector `vector` with `message` through aligned DWORD writes, as Linux does.
    func program(_ table: inout MSIXTable, vector: Int, _ message: MSIMessage, masked: Bool) -> [MSIXEffect] {
        let base = UInt64(vector * 16)
        var effects = table.writeTable(offset: base, size: 4, value: message.address & 0xFFFF_FFFF)
        effects += table.writeTable(offset: base + 4, size: 4, value: message.address >> 32)
        effects += table.writeTable(offset: base + 8, size: 4, value: UInt64(message.data))
        effects += table.writeTable(offset: base + 12, size: 4, value: masked ? 1 : 0)
        return effects
    }

    @Test func vectorsStartMaskedAndRouteOnlyWhenEnabledAndUnmasked() throws {
        var table = try MSIXTable(vectorCount: 4)
        #expect(table.readTable(offset: 12, size: 4) == 1)
        #expect(program(&table, vector: 1, message, masked: false).isEmpty)   // MSI-X still disabled
        #expect(table.setControl(enabled: true, functionMasked: false) == [.route(vector: 1, message: message)])
        #expect(table.signal(1) == [.trigger(vector: 1)])
        #expect(table.setControl(enabled: true, functionMasked: true) == [.route(vector: 1, message: nil)])
        #expect(table.setControl(enabled: false, functionMasked: false).isEmpty)
        #expect(table.signal(1).isEmpty)   // disabled: the owner falls back to INTx
    }

    @Test func maskedVectorLatchesPendingAndFiresOnceOnUnmask() throws {
        var table = try MSIXTable(vectorCount: 4)
        _ = table.setControl(enabled: true, functionMasked: false)
        _ = program(&table, vector: 2, message, masked: true)
        #expect(table.signal(2).isEmpty)
        #expect(table.signal(2).isEmpty)
        #expect(table.readPBA(offset: 0, size: 8) == 0b100)
        #expect(table.writeTable(offset: 2 * 16 + 12, size: 4, value: 0) == [.route(vector: 2, message: message), .trigger(vector: 2)])
        #expect(table.readPBA(offset: 0, size: 8) == 0)
        #expect(table.writeTable(offset: 2 * 16 + 12, size: 4, value: 0).isEmpty)
    }

    @Test func functionMaskHoldsEveryVectorUntilCleared() throws {
        var table = try MSIXTable(vectorCount: 2)
        _ = program(&table, vector: 0, message, masked: false)
        _ = table.setControl(enabled: true, functionMasked: true)
        #expect(table.signal(0).isEmpty)
        #expect(table.pending == [true, false])
        #expect(table.setControl(enabled: true, functionMasked: false) == [.route(vector: 0, message: message), .trigger(vector: 0)])
    }

    @Test func hostileTableAccessesAreIgnored() throws {
        var table = try MSIXTable(vectorCount: 2)
        let before = table
        #expect(table.writeTable(offset: 0, size: 1, value: 0xFF).isEmpty)
        #expect(table.writeTable(offset: 2, size: 2, value: 0xFFFF).isEmpty)
        #expect(table.writeTable(offset: 6, size: 4, value: 1).isEmpty)           // misaligned DWORD
        #expect(table.writeTable(offset: 28, size: 8, value: 0).isEmpty)          // runs past the table
        #expect(table.writeTable(offset: UInt64.max - 3, size: 4, value: 0).isEmpty)
        #expect(table == before)
        #expect(table.signal(-1).isEmpty && table.signal(2).isEmpty && table.signal(Int.max).isEmpty)
        #expect(table.readTable(offset: UInt64.max, size: 8) == 0)
        #expect(table.readPBA(offset: 64, size: 8) == 0)
        #expect(throws: PCIError.self) { try MSIXTable(vectorCount: 0) }
        #expect(throws: PCIError.self) { try MSIXTable(vectorCount: 2049) }
    }

    @Test func qwordWritesProgramAddressAndDataTogether() throws {
        var table = try MSIXTable(vectorCount: 1)
        _ = table.setControl(enabled: true, functionMasked: false)
        _ = table.writeTable(offset: 0, size: 8, value: message.address)
        #expect(table.writeTable(offset: 8, size: 8, value: UInt64(message.data)) == [.route(vector: 0, message: message)])
    }

    @Test func deviceRoutesThroughTheControllerWithItsAddress() throws {
        let (root, function, line, address) = try makeRootWithFunction()
        let controller = function.controller
        let msixBAR = try #require(root.decodedBARs(of: address).first { $0.index == TestPCIFunction.msixBAR })
        let window = root.mmio32Window
        func tableWrite(_ offset: UInt64, _ value: UInt64) { window.write(offset: msixBAR.address + offset - window.base, size: 4, value: value) }
        tableWrite(0, message.address)
        tableWrite(8, UInt64(message.data))
        tableWrite(12, 0)
        // Enable MSI-X in message control: the route appears, and INTx is no longer used.
        let cap = 0x44   // after the 4-byte vendor capability at 0x40
        #expect(root.configRead(address, offset: cap, size: 1) == 0x11)
        root.configWrite(address, offset: cap + 2, size: 2, value: 0x8000)
        function.raise(vector: 0)
        #expect(controller.calls == [.route(address, 0, message), .trigger(address, 0)])
        #expect(line.history.isEmpty)
        // The PBA is readable through the BAR.
        tableWrite(12, 1)
        function.raise(vector: 0)
        #expect(window.read(offset: msixBAR.address + 0x800 - window.base, size: 8) == 1)
    }
}
