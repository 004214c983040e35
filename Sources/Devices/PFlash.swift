import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The bytes behind a flash device: host pages the VMM may also hand to KVM as a read-only memory
/// slot (so array-mode reads never exit), always anonymous memory. With a file behind them (the
/// per-VM UEFI variable store), what the guest programs or erases is written back to the file at
/// `sync()` (not through a shared mapping: some file systems, 9p among them, cannot map a file
/// shared).
public final class FlashMemory: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let count: Int
    /// The file behind the bytes (nil: they live as long as the VM); kept open for `sync()`.
    private let fileDescriptor: Int32?
    private let path: String
    /// Changed since the last sync: [lower, upper) in bytes; the flash's own lock covers it.
    private var dirty: Range<Int>?

    /// A private copy of `bytes`.
    public convenience init(copying bytes: [UInt8]) throws(FlashError) {
        try self.init(bytes: bytes, fd: nil, path: "(memory)")
    }

    /// The whole of the regular file open read-write on `fd` (taken over: closed with this object).
    public convenience init(file fd: Int32, path: String) throws(FlashError) {
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0 else {
            close(fd)
            throw .cannotMap(path: path, reason: "not a non-empty regular file")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let count = bytes[done...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(done)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let reason = count < 0 ? String(cString: strerror(errno)) : "it shrank while being read"
                close(fd)
                throw .cannotMap(path: path, reason: reason)
            }
            done += count
        }
        do {
            try self.init(bytes: bytes, fd: fd, path: path)
        } catch {
            close(fd)
            throw error
        }
    }

    private init(bytes: [UInt8], fd: Int32?, path: String) throws(FlashError) {
        guard !bytes.isEmpty, let mapped = mmap(nil, bytes.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapped != MAP_FAILED else {
            throw .cannotMap(path: path, reason: bytes.isEmpty ? "empty" : String(cString: strerror(errno)))
        }
        bytes.withUnsafeBytes { mapped.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        base = mapped
        count = bytes.count
        fileDescriptor = fd
        self.path = path
    }

    deinit {
        munmap(base, count)
        if let fileDescriptor { close(fileDescriptor) }
    }

    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    /// Replaces the contents (a restored snapshot's) and writes them to the file, if any.
    public func overwrite(with bytes: [UInt8]) {
        precondition(bytes.count == count)
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: count) }
        markDirty(0..<count)
        sync()
    }

    func markDirty(_ range: Range<Int>) {
        dirty = dirty.map { min($0.lowerBound, range.lowerBound)..<max($0.upperBound, range.upperBound) } ?? range
    }

    /// Writes what changed to the file and waits for it; false (and the change still pending)
    /// when the file refused it.
    @discardableResult
    public func sync() -> Bool {
        guard let fd = fileDescriptor, let range = dirty else { dirty = nil; return true }
        var done = range.lowerBound
        while done < range.upperBound {
            let count = pwrite(fd, base + done, range.upperBound - done, off_t(done))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return false }
            done += count
        }
        guard fdatasync(fd) == 0 else { return false }
        dirty = nil
        return true
    }
}

public enum FlashError: Error, Equatable, CustomStringConvertible {
    case cannotMap(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotMap(path, reason): return "cannot map the flash image '\(path)': \(reason)"
        }
    }
}

/// Saved state of a `PFlash`: its command state and contents.
public struct PFlashState: Codable, Equatable, Sendable {
    public var command: UInt8
    public var awaitingSecondCycle: Bool
    public var status: UInt8
    /// The whole array, so a restored or migrated VM finds its UEFI variables as it left them.
    public var contents: [UInt8]

    public init(command: UInt8, awaitingSecondCycle: Bool, status: UInt8, contents: [UInt8]) {
        self.command = command
        self.awaitingSecondCycle = awaitingSecondCycle
        self.status = status
        self.contents = contents
    }

    public func validate(size: Int) throws(DeviceStateError) {
        guard contents.count == size else {
            throw DeviceStateError(device: "flash", field: "contents", problem: "\(contents.count) bytes for a \(size)-byte flash")
        }
        guard PFlash.knownCommands.contains(command) else {
            throw DeviceStateError(device: "flash", field: "command", problem: "0x\(String(command, radix: 16)) is not a command this flash keeps")
        }
        if awaitingSecondCycle && command != PFlash.programCommand && command != PFlash.eraseCommand {
            throw DeviceStateError(device: "flash", field: "command", problem: "only program and erase take a second cycle")
        }
    }
}

/// A parallel NOR flash with Intel's command set, as QEMU's pflash_cfi01 models it for PC
/// machines and OVMF drives it for its variable store (OvmfPkg's QemuFlash.c), byte wide,
/// 4 KiB blocks:
/// ```
/// 0xFF, 0x00  read array            0x50  clear status (and read array)
/// 0x10, 0x40  program: the next write's bytes are stored
/// 0x20, 0xD0  erase the 4 KiB block (anything but 0xD0 aborts with a sequence error)
/// 0x70  read status (0x80: ready)   0x90  read identifier   0x98  CFI query ("QRY")
/// ```
/// In read-array mode the array is plain memory the VMM maps read-only into the guest, so reads
/// never reach the device and writes always do. `onRegisterReads(true)` is called when reads must
/// reach the device instead (status, identifier, CFI: the VMM then unmaps the array) and
/// `onRegisterReads(false)` when they need not any more. After program and erase QEMU also returns
/// status to reads until the next read-array; OVMF never reads there (it writes 0xFF first), so
/// this flash keeps the array mapped and spares two memory-slot changes per write.
public final class PFlash: BusDevice {
    public static let blockSize = 4096
    static let programCommand: UInt8 = 0x10
    static let eraseCommand: UInt8 = 0x20
    static let readArrayCommand: UInt8 = 0xFF
    static let statusCommand: UInt8 = 0x70
    static let identifierCommand: UInt8 = 0x90
    static let queryCommand: UInt8 = 0x98
    static let knownCommands: Set<UInt8> = [readArrayCommand, programCommand, eraseCommand, statusCommand, identifierCommand, queryCommand]
    /// Status register: write state machine ready; erase and program errors.
    static let statusReady: UInt8 = 0x80
    static let statusEraseError: UInt8 = 0x20
    static let statusProgramError: UInt8 = 0x10
    /// Intel's manufacturer code and QEMU's default device id for this flash.
    static let manufacturerID: UInt8 = 0x89
    static let deviceID: UInt8 = 0x18

    private struct Registers {
        var command: UInt8 = PFlash.readArrayCommand
        var awaitingSecondCycle = false
        var status: UInt8 = PFlash.statusReady
        /// Programmed or erased since the last sync.
        var dirty = false
    }

    public let memory: FlashMemory
    private let registers = Mutex(Registers())
    private let onRegisterReads: @Sendable (Bool) -> Void

    public init(memory: FlashMemory, onRegisterReads: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.memory = memory
        self.onRegisterReads = onRegisterReads
    }

    public init(memory: FlashMemory, restoring saved: PFlashState,
                onRegisterReads: @escaping @Sendable (Bool) -> Void = { _ in }) throws(DeviceStateError) {
        try saved.validate(size: memory.count)
        memory.overwrite(with: saved.contents)
        self.memory = memory
        self.onRegisterReads = onRegisterReads
        registers.withLock {
            $0.command = saved.command
            $0.awaitingSecondCycle = saved.awaitingSecondCycle
            $0.status = saved.status
        }
    }

    /// Whether reads must reach the device now (the machine maps the array only when false).
    public var readsNeedDevice: Bool { registers.withLock { Self.registerReads($0.command) } }

    public var state: PFlashState {
        let r = registers.withLock { $0 }
        return PFlashState(command: r.command, awaitingSecondCycle: r.awaitingSecondCycle, status: r.status, contents: memory.bytes)
    }

    /// A 1-8 byte access wholly inside the array.
    private func inside(_ offset: UInt64, _ size: Int) -> Bool {
        guard size > 0, size <= 8 else { return false }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(size))
        return !overflow && end <= UInt64(memory.count)
    }

    private static func registerReads(_ command: UInt8) -> Bool {
        command == statusCommand || command == identifierCommand || command == queryCommand
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard inside(offset, size) else { return pciAllOnes(size: size) }
        let command = registers.withLock { $0.command }
        var value: UInt64 = 0
        for index in 0..<size {
            let byte: UInt8
            let at = Int(offset) + index
            switch command {
            case Self.statusCommand, Self.programCommand, Self.eraseCommand: byte = registers.withLock { $0.status }
            case Self.identifierCommand: byte = at & 1 == 0 ? Self.manufacturerID : Self.deviceID
            case Self.queryCommand:
                // The query's signature at word addresses 0x10-0x12; the tables it would lead to are
                // not modelled (no firmware Vireo boots asks for them).
                let query: [Int: UInt8] = [0x10: 0x51, 0x11: 0x52, 0x12: 0x59]
                byte = query[at & 0xFF] ?? 0
            default: byte = memory.base.load(fromByteOffset: at, as: UInt8.self)
            }
            value |= UInt64(byte) << (8 * UInt64(index))
        }
        return value
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard inside(offset, size) else { return }
        let (before, after, sync) = registers.withLock { r -> (Bool, Bool, Bool) in
            let before = Self.registerReads(r.command)
            var sync = false
            let command = UInt8(truncatingIfNeeded: value)
            if r.awaitingSecondCycle {
                r.awaitingSecondCycle = false
                if r.command == Self.programCommand {
                    for index in 0..<size {
                        memory.base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))),
                                               toByteOffset: Int(offset) + index, as: UInt8.self)
                    }
                    memory.markDirty(Int(offset)..<(Int(offset) + size))
                    r.dirty = true
                    r.status |= Self.statusReady
                } else if command == 0xD0 {
                    let block = Int(offset) & ~(Self.blockSize - 1)
                    let length = min(Self.blockSize, memory.count - block)
                    (memory.base + block).initializeMemory(as: UInt8.self, repeating: 0xFF, count: length)
                    memory.markDirty(block..<(block + length))
                    r.dirty = true
                    r.status |= Self.statusReady
                } else {
                    // An erase not confirmed: a command sequence error, back to reading the array.
                    r.status |= Self.statusEraseError | Self.statusProgramError
                    r.command = Self.readArrayCommand
                }
                return (before, Self.registerReads(r.command), false)
            }
            switch command {
            case Self.programCommand, 0x40:
                r.command = Self.programCommand
                r.awaitingSecondCycle = true
            case Self.eraseCommand:
                r.command = Self.eraseCommand
                r.awaitingSecondCycle = true
            case 0x50:
                r.status = 0
                r.command = Self.readArrayCommand
            case Self.statusCommand, Self.identifierCommand, Self.queryCommand:
                r.command = command
            default:
                // 0xFF, 0x00 and everything this flash does not implement: read the array again.
                r.command = Self.readArrayCommand
                sync = r.dirty
                r.dirty = false
            }
            return (before, Self.registerReads(r.command), sync)
        }
        // Back to reading the array after a program or erase: the file gets what changed.
        if sync { registers.withLock { _ in _ = memory.sync() } }
        if before != after { onRegisterReads(after) }
    }
}
