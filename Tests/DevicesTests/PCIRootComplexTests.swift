import Devices
import Synchronization
import Testing

@Suite struct PCIRootComplexTests {
    let hostBridge = PCIDeviceAddress(device: 0)

    @Test func hostBridgeIsDeviceZeroWithBridgeClass() throws {
        let (root, _, _, _) = try makeRootWithFunction()
        let driver = ConfigPortsDriver(ports: root.configPorts)
        #expect(driver.read(hostBridge, 0x00, size: 2) == 0x8086)
        #expect(driver.read(hostBridge, 0x02, size: 2) == 0x0D57)
        #expect(driver.read(hostBridge, 0x08, size: 4) >> 8 == 0x06_0000)
        #expect(driver.read(hostBridge, 0x0E, size: 1) == 0)   // type-0 header, single function
    }

    /// The identity OVMF needs: an i440FX host bridge and the PIIX4 PM function at 00:01.3, whose
    /// PMBA and PMREGMISC already point at Vireo's ACPI PM block and stay there whatever is written.
    @Test func i440fxChipsetAnswersAsOVMFExpects() throws {
        let root = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: TestWindows.mmio32, chipset: .i440fx)
        let driver = ConfigPortsDriver(ports: root.configPorts)
        #expect(driver.read(hostBridge, 0x00, size: 4) == 0x1237_8086)
        let pm = PCIDeviceAddress(device: 1, function: 3)
        #expect(driver.read(pm, 0x00, size: 4) == 0x7113_8086)
        #expect(driver.read(pm, 0x08, size: 4) >> 8 == 0x06_8000)
        #expect(driver.read(pm, 0x40, size: 4) == 0x601, "PMBA: I/O base 0x600, bit 0 set")
        #expect(driver.read(pm, 0x80, size: 1) & 1 == 1, "PMREGMISC: PMIOSE set")
        driver.write(pm, 0x40, size: 4, value: 0xB001)
        driver.write(pm, 0x80, size: 1, value: 0)
        #expect(driver.read(pm, 0x40, size: 4) == 0x601 && driver.read(pm, 0x80, size: 1) == 1)
        #expect(root.ecam.read(offset: ecamOffset(pm, 0x40), size: 2) == 0x601)
        // Function 0 of slot 1 stays free for a device, and Vireo's own chipset has no PIIX4.
        #expect(driver.read(PCIDeviceAddress(device: 1), 0, size: 4) == 0xFFFF_FFFF)
        let plain = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: TestWindows.mmio32)
        #expect(ConfigPortsDriver(ports: plain.configPorts).read(pm, 0, size: 4) == 0xFFFF_FFFF)
    }

    @Test func portsAndECAMReturnTheSameBytesForEveryWidth() throws {
        let (root, _, _, function) = try makeRootWithFunction()
        let driver = ConfigPortsDriver(ports: root.configPorts)
        for device in [hostBridge, function] {
            for size in [1, 2, 4] {
                for register in stride(from: 0, to: 256, by: size) {
                    let viaPorts = driver.read(device, register, size: size)
                    let viaECAM = root.ecam.read(offset: ecamOffset(device, register), size: size)
                    #expect(viaPorts == viaECAM, "register 0x\(String(register, radix: 16)) size \(size) of \(device)")
                }
            }
        }
        // The function answers through both paths with its own identity.
        #expect(root.ecam.read(offset: ecamOffset(function, 0), size: 4) == 0x5678_1234)
    }

    @Test func absentFunctionsReadAllOnesAndIgnoreWrites() throws {
        let (root, _, _, _) = try makeRootWithFunction()
        let driver = ConfigPortsDriver(ports: root.configPorts)
        let absent = [PCIDeviceAddress(device: 5), PCIDeviceAddress(device: 3, function: 1), PCIDeviceAddress(bus: 1, device: 0),
                      PCIDeviceAddress(device: 31, function: 7)]
        for device in absent {
            #expect(driver.read(device, 0, size: 4) == 0xFFFF_FFFF)
            #expect(driver.read(device, 0, size: 2) == 0xFFFF)
            #expect(root.ecam.read(offset: ecamOffset(device, 0x10), size: 1) == 0xFF)
            driver.write(device, 0x04, size: 2, value: 0x7)
            root.ecam.write(offset: ecamOffset(device, 0x04), size: 2, value: 0x7)
            #expect(root.ecam.read(offset: ecamOffset(device, 0x04), size: 2) == 0xFFFF)
        }
    }

    /// A snapshot between a guest's write to 0xCF8 and its access to 0xCFC: the restored root
    /// answers the register the guest selected, and keeps the host bridge's command register.
    @Test func savedStateCarriesTheLatchAndTheHostBridge() throws {
        let (root, _, _, _) = try makeRootWithFunction()
        let driver = ConfigPortsDriver(ports: root.configPorts)
        driver.write(hostBridge, 0x04, size: 2, value: 0x0006)
        root.configPorts.write(offset: 0, size: 4, value: 0x8000_0000)   // host bridge, register 0
        let saved = root.savedState
        let (restored, _, _, _) = try makeRootWithFunction()
        try restored.restore(saved)
        #expect(restored.configPorts.read(offset: 4, size: 2) == 0x8086)   // 0xCFC without a new latch write
        #expect(ConfigPortsDriver(ports: restored.configPorts).read(hostBridge, 0x04, size: 2) == 0x0006)
        var hostile = saved
        hostile.configAddress = 0x8000_0003
        #expect(throws: DeviceStateError.self) { try restored.restore(hostile) }
    }

    @Test func onlyDwordWritesToCF8LatchTheAddress() throws {
        let (root, _, _, function) = try makeRootWithFunction()
        let ports = root.configPorts
        let latch: UInt64 = 0x8000_1800 | UInt64(function.device) << 11 & 0xF800
        ports.write(offset: 0, size: 4, value: latch)
        #expect(ports.read(offset: 0, size: 4) == latch)
        // Byte and word accesses to 0xCF8-0xCFB reach other chipset registers, not the latch.
        ports.write(offset: 0, size: 1, value: 0)
        ports.write(offset: 2, size: 2, value: 0)
        #expect(ports.read(offset: 0, size: 4) == latch)
        #expect(ports.read(offset: 0, size: 2) == 0xFFFF)
        // Reserved low bits read back as zero.
        ports.write(offset: 0, size: 4, value: 0x8000_0003)
        #expect(ports.read(offset: 0, size: 4) == 0x8000_0000)
    }

    @Test func dataPortHonoursEnableBitAndByteLanes() throws {
        let (root, _, _, function) = try makeRootWithFunction()
        let ports = root.configPorts
        let base = UInt64(function.device) << 11
        ports.write(offset: 0, size: 4, value: base)   // enable bit clear
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        ports.write(offset: 0, size: 4, value: 0x8000_0000 | base)
        #expect(ports.read(offset: 4, size: 2) == 0x1234)
        #expect(ports.read(offset: 6, size: 2) == 0x5678)   // 0xCFE: register + 2
        #expect(ports.read(offset: 7, size: 1) == 0x56)
        // A word at 0xCFF would run past the data window.
        #expect(ports.read(offset: 7, size: 2) == 0xFFFF)
    }

    @Test func resetControlRegisterRequestsAReset() throws {
        let sink = RecordingEventSink()
        let root = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: TestWindows.mmio32, resetSink: sink)
        root.configPorts.write(offset: 1, size: 1, value: 0x02)
        #expect(sink.events.isEmpty)
        root.configPorts.write(offset: 1, size: 1, value: 0x06)
        #expect(sink.events == [.reset])
    }

    @Test func ecamRejectsAccessesCrossingAFunction() throws {
        let (root, _, _, function) = try makeRootWithFunction()
        #expect(root.ecam.read(offset: ecamOffset(function, 0xFFE), size: 4) == 0xFFFF_FFFF)
        #expect(root.ecam.read(offset: ecamOffset(function, 0), size: 8) == UInt64.max)
        #expect(root.ecam.read(offset: ecamOffset(function, 0xFFC), size: 4) == 0)   // extended space exists, empty
    }

    @Test func barsAreAssignedNaturallyAlignedInsideTheirWindows() throws {
        let (root, function, _, address) = try makeRootWithFunction(mmio64: true)
        let mappings = root.decodedBARs(of: address)
        #expect(mappings.count == 3)
        for mapping in mappings {
            #expect(mapping.address % max(mapping.size, 4096) == 0 || mapping.kind == .io)
            switch mapping.kind {
            case .memory32: #expect(TestWindows.mmio32.contains(mapping.address))
            case .memory64: #expect(TestWindows.mmio64.contains(mapping.address))
            case .io: #expect(TestWindows.io.contains(mapping.address) && mapping.address % 0x20 == 0)
            }
        }
        // Decoding is on and the BAR registers hold the addresses, as firmware leaves them.
        let command = root.configRead(address, offset: 0x04, size: 2)
        #expect(command & 0x3 == 0x3)
        let low = UInt64(root.configRead(address, offset: 0x18, size: 4)), high = UInt64(root.configRead(address, offset: 0x1C, size: 4))
        #expect(high << 32 | (low & ~0xF) == mappings.first { $0.index == 2 }?.address)
        #expect(low & 0xF == 0xC)   // 64-bit, prefetchable
        _ = function
    }

    @Test func insertionRefusesBadSlotsAndFullWindows() throws {
        let root = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xC000_8000,
                                      io: TestWindows.io)
        #expect(throws: PCIError.invalidSlot(0)) { try root.insert(try TestPCIFunction(), slot: 0, intx: nil) }
        #expect(throws: PCIError.invalidSlot(32)) { try root.insert(try TestPCIFunction(), slot: 32, intx: nil) }
        try root.insert(try TestPCIFunction(), slot: 1, intx: nil)
        #expect(throws: PCIError.slotInUse(1)) { try root.insert(try TestPCIFunction(), slot: 1, intx: nil) }
        // 16 KiB + 4 KiB used of 32 KiB: a second 16 KiB BAR does not fit; nothing is half-assigned.
        #expect(throws: PCIError.windowExhausted(kind: .memory64(prefetchable: true), size: 0x4000)) {
            try root.insert(try TestPCIFunction(), slot: 2, intx: nil)
        }
        #expect(root.nextFreeSlot() == 2)
        try root.insert(try TestPCIFunction(mem64Size: 0x1000), slot: 2, intx: nil)
    }

    @Test func invalidWindowsAreRefused() {
        #expect(throws: PCIError.self) { try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 0x1000, mmio32: TestWindows.mmio32) }
        #expect(throws: PCIError.self) { try PCIRootComplex(ecamBase: 0xE008_0000, ecamSize: 1 << 20, mmio32: TestWindows.mmio32) }
        #expect(throws: PCIError.self) { try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xF000_0000..<0x1_1000_0000) }
        #expect(throws: PCIError.self) {
            try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: TestWindows.mmio32, io: 0xF000..<0x2_0000)
        }
        #expect(throws: PCIError.self) { try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xE010_0000) }
        #expect(throws: PCIError.self) {
            try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: TestWindows.mmio32, mmio64: 0xD000_0000..<0x1_0000_0000)
        }
    }
}
