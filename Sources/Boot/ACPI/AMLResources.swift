/// Resource data types for _CRS buffers (ACPI 6.5 section 6.4): the small and large descriptors
/// Vireo's DSDT needs, each the exact bytes ASL's ResourceTemplate macros would produce.
public enum AMLResource {
    /// Interrupt-descriptor trigger mode and polarity.
    public enum Trigger: Sendable { case edge, level }
    public enum Polarity: Sendable { case activeHigh, activeLow }

    static let ioPortTag: UInt8 = 0x47, irqTag: UInt8 = 0x22, endTag: UInt8 = 0x79
    static let memory32FixedTag: UInt8 = 0x86, dwordAddressTag: UInt8 = 0x87, wordAddressTag: UInt8 = 0x88
    static let extendedInterruptTag: UInt8 = 0x89, qwordAddressTag: UInt8 = 0x8A
    static let memoryRange: UInt8 = 0, ioRange: UInt8 = 1, busNumberRange: UInt8 = 2

    /// ResourceTemplate(): the descriptors, then an End Tag whose checksum 0 means "treat as valid"
    /// (6.4.2.9), wrapped in a Buffer.
    public static func template(_ descriptors: [[UInt8]]) throws(AMLError) -> [UInt8] {
        try AML.buffer(descriptors.flatMap { $0 } + [endTag, 0])
    }

    /// IO(Decode16, min, max, alignment, length) — I/O Port Descriptor (6.4.2.5).
    public static func io(minimum: UInt16, maximum: UInt16, alignment: UInt8 = 1, length: UInt8) throws(AMLError) -> [UInt8] {
        guard minimum <= maximum, length > 0 else {
            throw .invalidResource("IO range \(hex(UInt64(minimum)))-\(hex(UInt64(maximum))) length \(length)")
        }
        return [ioPortTag, 0x01] + AML.littleEndian(UInt64(minimum), count: 2) + AML.littleEndian(UInt64(maximum), count: 2)
            + [alignment, length]
    }

    /// IRQNoFlags(){...} — IRQ Descriptor without the flags byte (6.4.2.1): ISA IRQs 0-15,
    /// edge-triggered active-high, as a 16-bit mask.
    public static func irqNoFlags(_ irqs: [Int]) throws(AMLError) -> [UInt8] {
        var mask: UInt16 = 0
        for irq in irqs {
            guard (0...15).contains(irq) else { throw .invalidResource("ISA IRQ \(irq) is not 0-15") }
            mask |= 1 << UInt16(irq)
        }
        return [irqTag] + AML.littleEndian(UInt64(mask), count: 2)
    }

    /// Interrupt(ResourceConsumer, trigger, polarity, Exclusive/Shared){...} — Extended Interrupt
    /// Descriptor (6.4.3.6) naming global system interrupts.
    public static func interrupt(_ gsis: [UInt32], trigger: Trigger, polarity: Polarity,
                                 shared: Bool = false) throws(AMLError) -> [UInt8] {
        guard (1...255).contains(gsis.count) else { throw .invalidResource("interrupt list of \(gsis.count) entries") }
        var flags: UInt8 = 0x01                                  // ResourceConsumer
        if trigger == .edge { flags |= 0x02 }
        if polarity == .activeLow { flags |= 0x04 }
        if shared { flags |= 0x08 }
        let length = 2 + 4 * gsis.count
        return [extendedInterruptTag] + AML.littleEndian(UInt64(length), count: 2) + [flags, UInt8(gsis.count)]
            + gsis.flatMap { AML.littleEndian(UInt64($0), count: 4) }
    }

    /// Memory32Fixed(ReadWrite/ReadOnly, base, length) — 32-bit Fixed Memory Range Descriptor (6.4.3.4).
    public static func memory32Fixed(base: UInt32, length: UInt32, writable: Bool = true) throws(AMLError) -> [UInt8] {
        guard length > 0, base.addingReportingOverflow(length - 1).overflow == false else {
            throw .invalidResource("fixed memory range \(hex(UInt64(base))) length \(hex(UInt64(length)))")
        }
        return [memory32FixedTag, 9, 0, writable ? 1 : 0] + AML.littleEndian(UInt64(base), count: 4)
            + AML.littleEndian(UInt64(length), count: 4)
    }

    /// WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, ...) (6.4.3.5.3).
    public static func wordBusNumber(_ range: ClosedRange<UInt16>) throws(AMLError) -> [UInt8] {
        try addressSpace(tag: wordAddressTag, width: 2, type: busNumberRange, typeFlags: 0,
                         minimum: UInt64(range.lowerBound), maximum: UInt64(range.upperBound))
    }

    /// WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...) (6.4.3.5.3).
    public static func wordIO(_ range: ClosedRange<UInt16>) throws(AMLError) -> [UInt8] {
        try addressSpace(tag: wordAddressTag, width: 2, type: ioRange, typeFlags: 0x03,
                         minimum: UInt64(range.lowerBound), maximum: UInt64(range.upperBound))
    }

    /// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable/Cacheable, ReadWrite, ...)
    /// (6.4.3.5.2).
    public static func dwordMemory(_ range: ClosedRange<UInt32>, cacheable: Bool) throws(AMLError) -> [UInt8] {
        try addressSpace(tag: dwordAddressTag, width: 4, type: memoryRange, typeFlags: cacheable ? 0x03 : 0x01,
                         minimum: UInt64(range.lowerBound), maximum: UInt64(range.upperBound))
    }

    /// QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable/Cacheable, ReadWrite, ...)
    /// (6.4.3.5.1).
    public static func qwordMemory(_ range: ClosedRange<UInt64>, cacheable: Bool) throws(AMLError) -> [UInt8] {
        try addressSpace(tag: qwordAddressTag, width: 8, type: memoryRange, typeFlags: cacheable ? 0x03 : 0x01,
                         minimum: range.lowerBound, maximum: range.upperBound)
    }

    /// The common Address Space Descriptor layout: type, general flags (producer, positive decode,
    /// min and max fixed = 0x0C), type-specific flags, then granularity, min, max, translation
    /// offset and length, each `width` bytes. Fixed-size fixed-location ranges need granularity 0
    /// and length = max - min + 1 (6.4.3.5, table "Valid combinations of address space fields").
    static func addressSpace(tag: UInt8, width: Int, type: UInt8, typeFlags: UInt8,
                             minimum: UInt64, maximum: UInt64) throws(AMLError) -> [UInt8] {
        let fieldMask: UInt64 = width == 8 ? .max : (1 << (8 * UInt64(width))) - 1
        let (span, overflow) = minimum <= maximum ? (maximum - minimum).addingReportingOverflow(1) : (0, true)
        // A range covering the whole 64-bit space has no representable length.
        guard !overflow, span <= fieldMask else {
            throw .invalidResource("address range \(hex(minimum))-\(hex(maximum)) does not fit a \(width * 8)-bit descriptor")
        }
        let fields = [0, minimum, maximum, 0, span].flatMap { AML.littleEndian($0, count: width) }
        let length = 3 + fields.count
        return [tag] + AML.littleEndian(UInt64(length), count: 2) + [type, 0x0C, typeFlags] + fields
    }
}
