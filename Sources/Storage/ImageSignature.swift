/// Recognizes image formats by their signatures, as qemu-img's probing does: qcow2, which Vireo
/// reads, and the formats of other hypervisors, which it must name rather than read as raw.
public enum ImageSignature {
    /// How many leading bytes the head signatures need (one sector, QEMU's BLOCK_PROBE_BUF_SIZE).
    public static let headLength = 512

    /// The format the first bytes of a file announce, nil for none (raw). "qcow2" for QEMU's own.
    public static func format(head: some Collection<UInt8>) -> String? {
        let bytes = Array(head.prefix(headLength))
        func starts(with text: String) -> Bool { bytes.starts(with: Array(text.utf8)) }
        func starts(with magic: [UInt8]) -> Bool { bytes.starts(with: magic) }
        if starts(with: [0x51, 0x46, 0x49, 0xFB]) { return "qcow2" }            // "QFI\xfb" (qcow and qcow2)
        if starts(with: [0x51, 0x45, 0x44, 0x00]) { return "QED" }
        if starts(with: "KDMV") || starts(with: "COWD") || starts(with: "# Disk DescriptorFile") { return "VMDK" }
        if starts(with: "vhdxfile") { return "VHDX" }
        if starts(with: "conectix") { return "VHD (vpc)" }
        if starts(with: "WithoutFreeSpace") || starts(with: "WithouFreSpacExt") { return "Parallels" }
        if starts(with: "Bochs Virtual HD Image") { return "Bochs" }
        if starts(with: "#!/bin/sh\n#V2.0 Format\nmodprobe cloop") { return "cloop" }
        if starts(with: [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]) { return "LUKS" }
        // VDI: its signature 0xbeda107f (little endian) at offset 0x40.
        if bytes.count >= 0x44, Array(bytes[0x40..<0x44]) == [0x7F, 0x10, 0xDA, 0xBE] { return "VDI" }
        return nil
    }

    /// The format a file's last sector announces: Apple's UDIF (DMG) ends in a "koly" trailer.
    public static func format(tail: some Collection<UInt8>) -> String? {
        Array(tail.prefix(4)) == Array("koly".utf8) ? "DMG" : nil
    }
}
