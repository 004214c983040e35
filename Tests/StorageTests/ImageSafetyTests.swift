import Foundation
import Testing
@testable import Storage
#if canImport(Glibc)
import Glibc
#endif

/// The host-file holes of review: what an image may be, format probing a guest can abuse, and
/// image locks that Vireo and QEMU honour between each other.
@Suite struct ImageSafetyTests {
    static func qcow2(_ path: String, size: UInt64 = 1 << 20, backing: String? = nil, backingFormat: String? = nil) throws {
        var options = QCOW2CreateOptions(size: size)
        options.backingFile = backing
        options.backingFormat = backingFormat
        try QCOW2Image.create(path: path, options: options, overwrite: true)
    }

    // MARK: What an image can be

    /// A FIFO as an image or as a backing file is refused at once (it used to block the open
    /// for ever, waiting for a writer); a character device as backing file too.
    @Test func fifosAndDevicesAreNotImages() throws {
        let dir = try TempDir()
        let fifo = dir.file("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: StorageError.notAnImageFile(path: fifo, kind: "a FIFO")) {
            _ = try DiskImage.open(path: fifo, format: .raw, readOnly: true)
        }
        #expect(throws: StorageError.notAnImageFile(path: fifo, kind: "a FIFO")) { _ = try DiskImage.probeFormat(path: fifo) }
        let overFIFO = dir.file("over-fifo.qcow2")
        try Self.qcow2(overFIFO, backing: fifo, backingFormat: "raw")
        #expect(throws: StorageError.notAnImageFile(path: fifo, kind: "a FIFO")) {
            _ = try DiskImage.open(path: overFIFO, format: .qcow2, readOnly: true)
        }
        let overDevice = dir.file("over-null.qcow2")
        try Self.qcow2(overDevice, backing: "/dev/null", backingFormat: "raw")
        #expect(throws: StorageError.notAnImageFile(path: "/dev/null", kind: "a character device")) {
            _ = try DiskImage.open(path: overDevice, format: .qcow2, readOnly: true)
        }
        #expect(throws: StorageError.notAnImageFile(path: dir.path, kind: "a directory")) {
            _ = try DiskImage.open(path: dir.path, format: .raw, readOnly: true)
        }
    }

    // MARK: Format probing

    /// Other hypervisors' images are named, not read as raw.
    @Test(arguments: [
        ("KDMV", 0, "VMDK"), ("# Disk DescriptorFile\nversion=1\n", 0, "VMDK"), ("vhdxfile", 0, "VHDX"),
        ("conectix", 0, "VHD (vpc)"), ("WithoutFreeSpace", 0, "Parallels"), ("Bochs Virtual HD Image", 0, "Bochs"),
        ("QED\u{0}", 0, "QED"), ("koly", -512, "DMG"),
    ])
    func foreignFormatsAreNamed(signature: String, at offset: Int, format: String) throws {
        let dir = try TempDir()
        let path = dir.file("disk")
        var bytes = [UInt8](repeating: 0, count: 64 << 10)
        let start = offset >= 0 ? offset : bytes.count + offset
        bytes.replaceSubrange(start..<start + signature.utf8.count, with: Array(signature.utf8))
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        #expect(throws: StorageError.foreignFormat(path: path, format: format)) { _ = try DiskImage.probeFormat(path: path) }
        #expect(throws: StorageError.foreignFormat(path: path, format: format)) { _ = try DiskImage.open(path: path, readOnly: true) }
        // Asked for as raw, it is raw.
        #expect(try DiskImage.open(path: path, format: .raw, readOnly: true).size == UInt64(bytes.count))
    }

    @Test func vdiIsRecognizedByItsSignatureAt0x40() {
        var head = [UInt8](repeating: 0, count: 512)
        head.replaceSubrange(0x40..<0x44, with: [0x7F, 0x10, 0xDA, 0xBE])
        #expect(ImageSignature.format(head: head) == "VDI")
        #expect(ImageSignature.format(head: [UInt8](repeating: 0, count: 512)) == nil)
    }

    /// The classic probing hole: a guest writes a qcow2 header naming a host file into sector 0
    /// of its raw disk, and the next start (probing again) serves it that file. A probed raw image
    /// refuses such a write, and any write covering part of the first sector; given as raw, it
    /// takes them.
    @Test func aProbedRawImageRefusesAnotherFormatsHeader() throws {
        let dir = try TempDir()
        let path = dir.file("disk.raw")
        try RawImage.create(path: path, size: 1 << 20)
        var header = [UInt8](repeating: 0, count: 512)
        header.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        let ordinary = [UInt8](repeating: 0xEB, count: 512)
        do {
            let probed = try DiskImage.open(path: path, readOnly: false)
            #expect((probed as? RawImage)?.probed == true)
            #expect(throws: StorageError.probedRawHeaderWrite(path: path)) { try header.withUnsafeBytes { try probed.write($0, at: 0) } }
            #expect(throws: StorageError.probedRawHeaderWrite(path: path)) {
                try ordinary.withUnsafeBytes { try probed.write(UnsafeRawBufferPointer(rebasing: $0[0..<16]), at: 0) }
            }
            try ordinary.withUnsafeBytes { try probed.write($0, at: 0) }          // a boot sector: fine
            try header.withUnsafeBytes { try probed.write($0, at: 4096) }         // elsewhere: fine
        }
        #expect(try DiskImage.probeFormat(path: path) == .raw)
        let explicit = try DiskImage.open(path: path, format: .raw, readOnly: false)
        try header.withUnsafeBytes { try explicit.write($0, at: 0) }
        #expect(try readAll(explicit).prefix(4) == [0x51, 0x46, 0x49, 0xFB])
    }

    // MARK: Locks

    @Test func twoWritersOrAWriterAndAReaderRefuseEachOther() throws {
        let dir = try TempDir()
        let path = dir.file("disk.qcow2")
        try Self.qcow2(path)
        do {
            let writer = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
            #expect(throws: StorageError.locked(path: path, permission: "write", shared: false)) {
                _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
            }
            #expect(throws: StorageError.locked(path: path, permission: "write", shared: true)) {
                _ = try DiskImage.open(path: path, format: .qcow2, readOnly: true)
            }
            // -U: a look at a disk in use.
            #expect(try DiskImage.open(path: path, format: .qcow2, readOnly: true, sharing: .forceShare).size == 1 << 20)
            // A migration source hands the disk over and takes it back.
            writer.releaseLocks()
            do { _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false) }
            try writer.acquireLocks()
            #expect(throws: StorageError.locked(path: path, permission: "write", shared: false)) {
                _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
            }
        }
        // Readers share; a writer then waits for them all to go.
        let first = try DiskImage.open(path: path, format: .qcow2, readOnly: true)
        let second = try DiskImage.open(path: path, format: .qcow2, readOnly: true)
        #expect(throws: StorageError.locked(path: path, permission: "write", shared: false)) {
            _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
        }
        withExtendedLifetime((first, second)) {}
        #expect(throws: StorageError.invalidArgument("\(path): --force-share (-U) is for read-only access; this needs to write the image")) {
            _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false, sharing: .forceShare)
        }
    }

    /// A lock that goes away within 0.2 s (a forked child's copy of a closed open, until it
    /// execs) does not refuse the open; one that stays is reported after that wait.
    @Test func aLockThatGoesAwayAtOnceIsWaitedFor() throws {
        let dir = try TempDir()
        let path = dir.file("disk.qcow2")
        try Self.qcow2(path)
        final class Holder: @unchecked Sendable { var reader: (any BlockDevice)? }
        let holder = Holder()
        holder.reader = try DiskImage.open(path: path, format: .qcow2, readOnly: true)
        let releaser = Thread { usleep(50_000); holder.reader = nil }
        releaser.start()
        let started = Date()
        _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
        #expect(Date().timeIntervalSince(started) >= 0.03, "the reader's lock was there at first")
        let kept = try DiskImage.open(path: path, format: .qcow2, readOnly: true)
        let refused = Date()
        #expect(throws: StorageError.locked(path: path, permission: "write", shared: false)) {
            _ = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
        }
        #expect(Date().timeIntervalSince(refused) >= 0.15)
        withExtendedLifetime(kept) {}
    }

    /// A backing file in use by a VM (read) cannot be committed into (written) meanwhile.
    @Test func aBackingFileInUseIsNotWritten() throws {
        let dir = try TempDir()
        let base = dir.file("base.qcow2"), overlay = dir.file("overlay.qcow2")
        try Self.qcow2(base)
        try Self.qcow2(overlay, backing: base, backingFormat: "qcow2")
        let running = try DiskImage.open(path: overlay, format: .qcow2, readOnly: false)
        #expect(throws: StorageError.locked(path: base, permission: "write", shared: false)) {
            _ = try DiskImage.open(path: base, format: .qcow2, readOnly: false)
        }
        withExtendedLifetime(running) {}
    }

    /// Vireo and QEMU refuse each other as two QEMUs do: the lock bytes are QEMU's.
    @Test func vireoAndQEMURefuseEachOther() throws {
        let dir = try TempDir()
        let path = dir.file("disk.qcow2")
        try Qemu.img("create", "-q", "-f", "qcow2", path, "1M")
        do {
            let writer = try DiskImage.open(path: path, format: .qcow2, readOnly: false)
            let (status, _, err) = try Qemu.run("qemu-img", ["info", path], allowFailure: true)
            #expect(status != 0)
            #expect(err.contains("Failed to get shared \"write\" lock"), "qemu-img info said: \(err)")
            let (shared, out, _) = try Qemu.run("qemu-img", ["info", "-U", path], allowFailure: true)
            #expect(shared == 0 && out.contains("virtual size: 1 MiB"))
            withExtendedLifetime(writer) {}
        }
        // QEMU holding it (qemu-io keeps it open for writing while it sleeps).
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Qemu.toolPath("qemu-io"))
        process.arguments = ["-f", "qcow2", "-c", "sleep 4000", path]
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        // Wait until qemu-io holds its write permission (byte 101), by asking the kernel without
        // taking a lock: opening the image to poll would itself make qemu-io's open fail.
        let probe = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(probe) }
        var held = false
        for _ in 0..<200 where !held {
            var lock = flock()
            lock.l_type = Int16(F_WRLCK)
            lock.l_whence = Int16(SEEK_SET)
            lock.l_start = 101
            lock.l_len = 1
            held = fcntl(probe, ImageLock.getLock, &lock) == 0 && lock.l_type != Int16(F_UNLCK)
            if !held { usleep(20_000) }
        }
        #expect(held, "qemu-io never took its write lock")
        var refusal: (any Error)?
        do { _ = try DiskImage.open(path: path, format: .qcow2, readOnly: true) } catch { refusal = error }
        #expect(refusal as? StorageError == .locked(path: path, permission: "write", shared: true), "\(String(describing: refusal))")
        #expect(try DiskImage.open(path: path, format: .qcow2, readOnly: true, sharing: .forceShare).size == 1 << 20)
    }
}
