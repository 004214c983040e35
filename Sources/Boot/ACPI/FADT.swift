/// The Fixed ACPI Description Table (ACPI 6.5 section 5.2.9, revision 6, 276 bytes) and the FACS
/// it points at. Vireo is a full (not hardware-reduced) ACPI platform: fixed PM1a event/control
/// blocks and a PM timer in I/O space (Devices.ACPIPM), SCI on IRQ 9, no SMI command port (ACPI
/// mode is always on), a fixed-feature power button and no sleep button.
enum FADT {
    static let length = 276
    static let revision: UInt8 = 6
    /// ACPI 6.5: FADT Minor Version 5 (the layout has not changed since 6.0).
    static let minorVersion: UInt8 = 5
    static let pm1EventLength: UInt8 = 4
    static let pm1ControlLength: UInt8 = 2
    static let pmTimerLength: UInt8 = 4
    /// CMOS register of the century (Devices.CMOSRTC keeps it at 0x32, as PC firmware does).
    static let centuryRegister: UInt8 = 0x32
    /// Latencies above 100 and 1000 µs say "C2 and C3 not supported".
    static let noC2Latency: UInt16 = 0x0FFF, noC3Latency: UInt16 = 0x0FFF

    /// IA-PC Boot Architecture Flags (5.2.9.3).
    enum BootArch {
        static let legacyDevices: UInt16 = 1 << 0
        static let has8042: UInt16 = 1 << 1
        static let vgaNotPresent: UInt16 = 1 << 2
        static let msiNotSupported: UInt16 = 1 << 3
    }
    /// Linux's i8042 driver refuses to probe when ACPI is on and the 8042 flag is clear.
    static let bootArchitecture = BootArch.has8042 | BootArch.vgaNotPresent

    /// Fixed Feature Flags (5.2.9, table 5.10).
    enum Flag {
        static let wbinvd: UInt32 = 1 << 0
        static let procC1: UInt32 = 1 << 2
        static let powerButtonIsControlMethod: UInt32 = 1 << 4
        static let sleepButtonIsControlMethod: UInt32 = 1 << 5
        static let fixRTC: UInt32 = 1 << 6
        static let timerValueExtended: UInt32 = 1 << 8
        static let resetRegisterSupported: UInt32 = 1 << 10
        static let hardwareReduced: UInt32 = 1 << 20
    }
    /// WBINVD works, HLT (C1) on every CPU, fixed power button (flag clear), no sleep button (set:
    /// "none or a control method one", and there is none), no RTC wake status, 32-bit PM timer,
    /// reset through RESET_REG.
    static let flags = Flag.wbinvd | Flag.procC1 | Flag.sleepButtonIsControlMethod | Flag.fixRTC
        | Flag.timerValueExtended | Flag.resetRegisterSupported

    /// RESET_REG: the i8042's "pulse reset line" command, which Devices.I8042 turns into a reset.
    static let resetPort: UInt64 = 0x64
    static let resetValue: UInt8 = 0xFE

    enum Offset {
        static let firmwareControl = 36, dsdt = 40, sciInterrupt = 46, smiCommand = 48
        static let pm1aEventBlock = 56, pm1aControlBlock = 64, pmTimerBlock = 76
        static let pm1EventLength = 88, pm1ControlLength = 89, pmTimerLength = 91
        static let c2Latency = 96, c3Latency = 98, century = 108, bootArchitecture = 109, flags = 112
        static let resetRegister = 116, resetValue = 128, minorVersion = 131
        static let xFirmwareControl = 132, xDSDT = 140, xPM1aEventBlock = 148, xPM1aControlBlock = 172
        static let xPMTimerBlock = 208
    }

    /// The FADT pointing at `dsdt` and `facs`. FIRMWARE_CTRL is set and X_FIRMWARE_CTRL left 0, as
    /// the spec asks when the 32-bit field is used; DSDT and X_DSDT both carry the address (equal
    /// values, which ACPICA accepts silently). Every I/O block has its legacy and X_ form with bit
    /// widths equal to the legacy lengths, which ACPICA cross-checks.
    static func build(dsdt: UInt64, facs: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: length - ACPITableHeader.size)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) { body.put(value, at: offset - ACPITableHeader.size) }
        func put(bytes: [UInt8], at offset: Int) { body.put(bytes: bytes, at: offset - ACPITableHeader.size) }
        let pm1Event = UInt64(X86Layout.acpiPM1EventPort)
        let pm1Control = UInt64(X86Layout.acpiPM1ControlPort)
        let pmTimer = UInt64(X86Layout.acpiPMTimerPort)

        put(UInt32(truncatingIfNeeded: facs), at: Offset.firmwareControl)
        put(UInt32(truncatingIfNeeded: dsdt), at: Offset.dsdt)
        put(UInt16(X86Layout.acpiSCIInterrupt), at: Offset.sciInterrupt)
        put(UInt32(0), at: Offset.smiCommand)   // no SMI: ACPI_ENABLE/ACPI_DISABLE unused, SCI_EN always set
        put(UInt32(pm1Event), at: Offset.pm1aEventBlock)
        put(UInt32(pm1Control), at: Offset.pm1aControlBlock)
        put(UInt32(pmTimer), at: Offset.pmTimerBlock)
        put(pm1EventLength, at: Offset.pm1EventLength)
        put(pm1ControlLength, at: Offset.pm1ControlLength)
        put(pmTimerLength, at: Offset.pmTimerLength)
        put(noC2Latency, at: Offset.c2Latency)
        put(noC3Latency, at: Offset.c3Latency)
        put(centuryRegister, at: Offset.century)
        put(bootArchitecture, at: Offset.bootArchitecture)
        put(flags, at: Offset.flags)
        put(bytes: ACPITableHeader.gas(space: ACPITableHeader.systemIO, bitWidth: 8,
                                       accessSize: ACPITableHeader.byteAccess, address: resetPort),
            at: Offset.resetRegister)
        put(resetValue, at: Offset.resetValue)
        put(minorVersion, at: Offset.minorVersion)
        put(dsdt, at: Offset.xDSDT)
        put(bytes: ACPITableHeader.gas(space: ACPITableHeader.systemIO, bitWidth: pm1EventLength * 8,
                                       accessSize: ACPITableHeader.wordAccess, address: pm1Event),
            at: Offset.xPM1aEventBlock)
        put(bytes: ACPITableHeader.gas(space: ACPITableHeader.systemIO, bitWidth: pm1ControlLength * 8,
                                       accessSize: ACPITableHeader.wordAccess, address: pm1Control),
            at: Offset.xPM1aControlBlock)
        put(bytes: ACPITableHeader.gas(space: ACPITableHeader.systemIO, bitWidth: pmTimerLength * 8,
                                       accessSize: ACPITableHeader.dwordAccess, address: pmTimer),
            at: Offset.xPMTimerBlock)
        return ACPITableHeader.table("FACP", revision: revision, body: body)
    }
}

/// The Firmware ACPI Control Structure (5.2.10): required on non-hardware-reduced platforms for
/// the global lock and waking vector, though Vireo uses neither. 64 bytes, 64-byte aligned, no
/// checksum.
enum FACS {
    static let length = 64
    static let alignment: UInt64 = 64
    static let version: UInt8 = 2

    static func build() -> [UInt8] {
        var table = [UInt8](repeating: 0, count: length)
        table.put(bytes: Array("FACS".utf8), at: 0)
        table.put(UInt32(length), at: 4)
        table[32] = version
        return table
    }
}
