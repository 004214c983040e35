// libFuzzer entry point for the snapshot file reader (SnapshotFile.parse and the restore checks
// that need no /dev/kvm: VMM's SnapshotFuzzing) and, with VIREO_FUZZ_TARGET=migration, for the
// destination's side of a live-migration stream (VMM's MigrationStreamFuzzing); each describes its
// input. Build and run with Fuzz/Snapshot/run.sh or Fuzz/MigrationStream/run.sh, which compile
// with -sanitize=fuzzer,address and -DVIREO_LIBFUZZER (libFuzzer then brings main). A normal
// `swift build` makes a replay tool of the same entry (VIREO_FUZZ_TARGET chooses it the same way):
//   SnapshotFuzz FILE|DIR...          runs each input once (a crash is a finding; refusals are fine)
//   SnapshotFuzz --valid FILE|DIR...  also fails (status 1) unless every input restores
//   SnapshotFuzz --write-seed DIR     writes the seed inputs (also on the libFuzzer build: --write-seed=DIR)
import Foundation
import VMM

/// The reader under test: snapshot files (default) or migration streams.
struct FuzzTarget: Sendable {
    let run: @Sendable ([UInt8]) throws -> Void
    let seeds: @Sendable () throws -> [[UInt8]]

    static let current: FuzzTarget = ProcessInfo.processInfo.environment["VIREO_FUZZ_TARGET"] == "migration"
        ? FuzzTarget(run: { try MigrationStreamFuzzing.run($0) }, seeds: MigrationStreamFuzzing.seeds)
        : FuzzTarget(run: { try SnapshotFuzzing.run($0) }, seeds: SnapshotFuzzing.seeds)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func snapshotFuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    try? FuzzTarget.current.run(bytes)
    return 0
}

/// libFuzzer passes flags starting with "--" through untouched: --write-seed=DIR writes the seeds and exits.
@_cdecl("LLVMFuzzerInitialize")
public func snapshotFuzzInitialize(_ argc: UnsafeMutablePointer<Int32>,
                                   _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let arguments = (0..<Int(argc.pointee)).compactMap { argv.pointee?[$0].map { String(cString: $0) } }
    if let flag = arguments.first(where: { $0.hasPrefix("--write-seed=") }) {
        exit(writeSeeds(to: String(flag.dropFirst("--write-seed=".count))))
    }
    return 0
}

func writeSeeds(to directory: String) -> Int32 {
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (index, seed) in try FuzzTarget.current.seeds().enumerated() {
            try Data(seed).write(to: URL(fileURLWithPath: directory).appendingPathComponent("seed-\(index)"))
        }
        return 0
    } catch {
        FileHandle.standardError.write(Data("cannot write the seeds to \(directory): \(error)\n".utf8))
        return 1
    }
}

#if !VIREO_LIBFUZZER
@main enum SnapshotFuzzReplay {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.count == 2, arguments[0] == "--write-seed" { exit(writeSeeds(to: arguments[1])) }
        let requireValid = arguments.first == "--valid"
        if requireValid { arguments.removeFirst() }
        guard !arguments.isEmpty else {
            FileHandle.standardError.write(Data("usage: SnapshotFuzz [--valid] FILE|DIR... | --write-seed DIR\n".utf8))
            exit(2)
        }
        var files: [String] = []
        for argument in arguments {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory), isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
                files += names.sorted().map { argument + "/" + $0 }
            } else {
                files.append(argument)
            }
        }
        var refused = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                print("\(file): cannot read")
                refused += 1
                continue
            }
            do {
                try FuzzTarget.current.run(Array(data))
                print("\(file): restored")
            } catch {
                print("\(file): refused: \(error)")
                refused += 1
            }
        }
        print("\(files.count) input(s), \(files.count - refused) restored, \(refused) refused")
        exit(requireValid && refused > 0 ? 1 : 0)
    }
}
#endif
