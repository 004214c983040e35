import Devices
import Foundation
import Testing

@Suite struct PCIConfigSpaceTests {
    @Test func readOnlyFieldsIgnoreWrites() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        let before = (0..<64).map { root.configRead(address, offset: $0 * 4, size: 4) }
        for register in [0x00, 0x08, 0x0C, 0x2C, 0x34, 0x3C] {
            root.configWrite(address, offset: register, size: 4, value: 0xFFFF_FFFF)
        }
        #expect(root.configRead(address, offset: 0x00, size: 4) == before[0])
        #expect(root.configRead(address, offset: 0x08, size: 4) == before[2])       // revision + class
        #expect(root.configRead(address, offset: 0x2C, size: 4) == 0xBBBB_AAAA)
        #expect(root.configRead(address, offset: 0x34, size: 1) == before[13] & 0xFF)
        // Cache line size and interrupt line are scratch bytes; header type, latency, pin are not.
        #expect(root.configRead(address, offset: 0x0C, size: 4) == 0x0000_00FF)
        #expect(root.configRead(address, offset: 0x3C, size: 2) == 0x01FF)
    }

    @Test func commandKeepsOnlyDefinedBitsAndStatusIsReadOnly() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        root.configWrite(address, offset: 0x04, size: 4, value: 0xFFFF_FFFF)
        #expect(root.configRead(address, offset: 0x04, size: 2) == 0x0547)
        // Status: only the capability-list bit (and interrupt status, clear here) reads set.
        #expect(root.configRead(address, offset: 0x06, size: 2) == 0x0010)
    }

    @Test func interruptRoutingIsWhatTheVMMGave() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        #expect(root.configRead(address, offset: 0x3C, size: 1) == 19)
        #expect(root.configRead(address, offset: 0x3D, size: 1) == 1)   // INTA#
        let root2 = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: TestWindows.mmio32, io: TestWindows.io)
        let noINTx = try root2.insert(try TestPCIFunction(), slot: 1, intx: nil)
        #expect(root2.configRead(noINTx, offset: 0x3D, size: 1) == 0)
    }

    @Test func capabilityWalkFindsEveryCapabilityOnce() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        var found: [(id: UInt32, offset: Int)] = []
        var pointer = Int(root.configRead(address, offset: 0x34, size: 1))
        while pointer != 0, found.count < 48 {
            #expect(pointer % 4 == 0 && pointer >= 0x40)
            found.append((root.configRead(address, offset: pointer, size: 1), pointer))
            pointer = Int(root.configRead(address, offset: pointer + 1, size: 1))
        }
        #expect(found.map(\.id) == [0x09, 0x11])
        let msix = try #require(found.last).offset
        // Table size N-1 = 3, table in BAR 2 at 0, PBA in BAR 2 at 0x800.
        #expect(root.configRead(address, offset: msix + 2, size: 2) == 3)
        #expect(root.configRead(address, offset: msix + 4, size: 4) == 2)
        #expect(root.configRead(address, offset: msix + 8, size: 4) == 0x802)
        // Only enable and function mask are writable in message control.
        root.configWrite(address, offset: msix + 2, size: 2, value: 0xFFFF)
        #expect(root.configRead(address, offset: msix + 2, size: 2) == 0xC003)
    }

    @Test func declareBARRefusesImpossibleBARs() {
        var config = PCIConfigSpace(header: PCIHeader(vendorID: 1, deviceID: 2, classCode: 0))
        #expect(throws: PCIError.self) { try config.declareBAR(PCIBARRequest(index: 5, size: 0x1000, kind: .memory64(prefetchable: false))) }
        #expect(throws: PCIError.self) { try config.declareBAR(PCIBARRequest(index: 0, size: 0x1800, kind: .memory32(prefetchable: false))) }
        #expect(throws: PCIError.self) { try config.declareBAR(PCIBARRequest(index: 6, size: 0x1000, kind: .memory32(prefetchable: false))) }
        #expect(throws: PCIError.self) { try config.declareBAR(PCIBARRequest(index: 0, size: 0x200, kind: .io)) }
        #expect(throws: Never.self) { try config.declareBAR(PCIBARRequest(index: 0, size: 0x1000, kind: .memory64(prefetchable: false))) }
        // Register 1 is the upper half of BAR 0 now.
        #expect(throws: PCIError.self) { try config.declareBAR(PCIBARRequest(index: 1, size: 0x1000, kind: .memory32(prefetchable: false))) }
    }

    @Test func capabilitiesThatDoNotFitAreRefused() throws {
        var config = PCIConfigSpace(header: PCIHeader(vendorID: 1, deviceID: 2, classCode: 0))
        try config.addCapability(id: 0x09, body: [UInt8](repeating: 0, count: 150))
        #expect(throws: PCIError.capabilitySpaceFull(needed: 52)) { try config.addCapability(id: 0x09, body: [UInt8](repeating: 0, count: 50)) }
    }

    @Test func intxFollowsStatusAndDisableBit() throws {
        let (root, function, line, address) = try makeRootWithFunction()
        function.raise(vector: 0)
        #expect(line.isHigh)
        #expect(root.configRead(address, offset: 0x06, size: 2) & 0x8 != 0)
        // With INTx disabled the pin stays low but status still shows the request.
        let command = root.configRead(address, offset: 0x04, size: 2)
        root.configWrite(address, offset: 0x04, size: 2, value: command | 0x400)
        function.raise(vector: 0)
        #expect(line.history.last == false)
        #expect(root.configRead(address, offset: 0x06, size: 2) & 0x8 != 0)
    }

    @Test func restoredConfigSpaceMustDescribeTheSameFunction() throws {
        var template = PCIConfigSpace(header: PCIHeader(vendorID: 0x1234, deviceID: 1, classCode: 0xFF_0000))
        try template.declareBAR(PCIBARRequest(index: 0, size: 0x1000, kind: .memory32(prefetchable: false)))
        var running = template
        running.write(offset: 0x10, size: 4, value: 0xD000_0000)   // the guest moved the BAR
        running.setInterruptStatus(true)                            // and an interrupt is pending
        #expect(throws: Never.self) { try running.validateRestored(as: template, device: "test") }
        var tampered = running
        tampered.setRaw(0x4321, at: 0, size: 2)
        #expect(throws: DeviceStateError.self) { try tampered.validateRestored(as: template, device: "test") }
        // A decoded state with a truncated byte array is refused, not indexed out of range.
        var json = try #require(JSONSerialization.jsonObject(with: JSONEncoder().encode(running)) as? [String: Any])
        json["bytes"] = [0, 1, 2]
        let short = try JSONDecoder().decode(PCIConfigSpace.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(throws: DeviceStateError.self) { try short.validateRestored(as: template, device: "test") }
    }
}
