/// Placement rules shared by the boot protocols: command lines and initrds.
enum BootPlacement {
    static let pageSize: UInt64 = 4096

    /// Puts the initrd page-aligned as high as possible with its last byte at or below `highest`
    /// and its first byte at or above `lowest` (the end of everything the kernel occupies).
    static func initrdHigh(size: UInt64, lowest: UInt64, highest: UInt64) throws(BootError) -> UInt64 {
        let (limit, overflow) = highest.addingReportingOverflow(1)
        guard !overflow, size <= limit, let floor = alignUp(lowest, pageSize) else {
            throw .initrdTooLarge(size: size, lowest: lowest, highest: highest)
        }
        let start = (limit - size) & ~(pageSize - 1)
        guard start >= floor else { throw .initrdTooLarge(size: size, lowest: floor, highest: highest) }
        return start
    }

    /// A command line as the NUL-terminated bytes the guest reads, bounded by `maximum` (without NUL).
    static func cmdlineBytes(_ cmdline: String, maximum: Int) throws(BootError) -> [UInt8] {
        let bytes = Array(cmdline.utf8)
        let areaLimit = Int(X86Layout.cmdlineAreaSize) - 1
        guard bytes.count <= min(maximum, areaLimit) else {
            throw .cmdlineTooLong(length: bytes.count, maximum: min(maximum, areaLimit))
        }
        return bytes + [0]
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}
