// libFuzzer entry point for the qcow2 header/table parser and read path.
// Build and run with Fuzz/QCOW2Header/run.sh (swiftc -sanitize=fuzzer,address).
#if canImport(Glibc)
import Glibc
#endif

private let scratchPath = "/tmp/vireo-fuzz-\(getpid()).qcow2"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let fd = open(scratchPath, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return 0 }
    _ = write(fd, data, size)
    close(fd)
    do {
        let image = try QCOW2Image(path: scratchPath, readOnly: true, openBacking: false)
        var buffer = [UInt8](repeating: 0, count: 65536)
        let length = Int(min(UInt64(buffer.count), image.size))
        try buffer.withUnsafeMutableBytes { try image.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<length]), at: 0) }
        _ = try QCOW2Image.check(path: scratchPath)
        _ = try QCOW2Image.snapshots(path: scratchPath)
    } catch is QCOW2Error {
    } catch is StorageError {
    } catch {
        fatalError("untyped error from the qcow2 parser: \(error)")  // fuzz harness only: report as a crash
    }
    return 0
}
