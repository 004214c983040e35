import Boot
import Foundation
import Testing
@testable import VMM

/// The on-disk store behind the bzImage payload cache (Boot's checks of what it returns are
/// tested in BootTests' PayloadCacheTests).
@Suite struct KernelPayloadCacheTests {
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-kcache-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func keyIsTheSHA256OfTheWholeFile() throws {
        let cache = KernelPayloadCacheDirectory(directory: "/unused")
        // FIPS 180-2 test vector.
        let key = try #require(cache.key(for: Array("abc".utf8)))
        #expect(key.digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(key.label == "sha256 ba7816bf…")
        #expect(cache.key(for: [])?.digest == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func storedEntryReadsBackAndCreatesTheDirectories() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = KernelPayloadCacheDirectory(directory: root + "/a/kernels")
        let key = try #require(cache.key(for: [1, 2, 3]))
        #expect(cache.load(key, maximumSize: 1 << 20) == .miss)
        let elf = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(cache.store(elf, for: key) == nil)
        #expect(cache.load(key, maximumSize: 1 << 20) == .hit(elf))
        let path = root + "/a/kernels/" + key.digest + ".elf"
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let permissions = attributes[.posixPermissions] as? Int ?? 0
        #expect(permissions & 0o600 == 0o600 && permissions & 0o022 == 0, "mode \(String(permissions, radix: 8))")
        // Nothing but the entry is left behind (the temporary file was renamed).
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/a/kernels") == [key.digest + ".elf"])
        // Replacing an entry (Boot does after rejecting one) overwrites it.
        #expect(cache.store([9, 9], for: key) == nil)
        #expect(cache.load(key, maximumSize: 1 << 20) == .hit([9, 9]))
    }

    @Test func oversizedOrOddEntriesAreUnreadableNotFatal() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = KernelPayloadCacheDirectory(directory: root)
        let key = try #require(cache.key(for: [4]))
        #expect(cache.store([UInt8](repeating: 1, count: 100), for: key) == nil)
        guard case .unreadable(let why) = cache.load(key, maximumSize: 99) else { Issue.record("expected unreadable"); return }
        #expect(why.contains("100 bytes"))
        try FileManager.default.removeItem(atPath: cache.entryPath(key))
        try FileManager.default.createDirectory(atPath: cache.entryPath(key), withIntermediateDirectories: false)
        guard case .unreadable = cache.load(key, maximumSize: 1 << 20) else { Issue.record("a directory is no entry"); return }
        try FileManager.default.removeItem(atPath: cache.entryPath(key))
        FileManager.default.createFile(atPath: cache.entryPath(key), contents: Data())
        guard case .unreadable = cache.load(key, maximumSize: 1 << 20) else { Issue.record("an empty file is no entry"); return }
    }

    /// Works as root too: the cache directory's parent is a regular file, so nothing can be created.
    @Test func unwritableDirectoryMeansNoCachingNotAnError() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        FileManager.default.createFile(atPath: root + "/file", contents: Data([1]))
        let cache = KernelPayloadCacheDirectory(directory: root + "/file/kernels")
        let key = try #require(cache.key(for: [5]))
        let why = try #require(cache.store([1, 2, 3], for: key))
        #expect(why.contains(root + "/file"), "\(why)")
        #expect(cache.load(key, maximumSize: 1 << 20) == .miss)
    }

    @Test func evictsTheLeastRecentlyUsedBeyondTheBound() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = KernelPayloadCacheDirectory(directory: root, maximumEntries: 3)
        FileManager.default.createFile(atPath: root + "/notes.txt", contents: Data([1]))   // not ours: kept
        var keys: [PayloadCacheKey] = []
        for index in 0..<6 {
            let key = try #require(cache.key(for: [UInt8(index)]))
            keys.append(key)
            #expect(cache.store([UInt8(index)], for: key) == nil)
            // Distinct, increasing times regardless of the file system's timestamp granularity.
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000 + Double(index) * 60)],
                                                  ofItemAtPath: cache.entryPath(key))
            if index == 2 {
                // Booting kernel 0 again makes it the most recently used.
                #expect(cache.load(keys[0], maximumSize: 16) == .hit([0]))
                try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000 + 1_000)],
                                                      ofItemAtPath: cache.entryPath(keys[0]))
            }
        }
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: root))
        #expect(names.filter { $0.hasSuffix(".elf") }.count == 3)
        #expect(names.contains("notes.txt"))
        // The last store (kernel 5) evicts down to its newest neighbours: kernel 0 (touched) and 4.
        for (index, key) in keys.enumerated() {
            #expect(names.contains(key.digest + ".elf") == [0, 4, 5].contains(index), "kernel \(index)")
        }
    }

    @Test func configurationFollowsTheEnvironment() {
        #expect(KernelPayloadCacheDirectory.configured(environment: ["HOME": "/home/u"]).cache?.directory == "/home/u/.cache/vireo/kernels")
        #expect(KernelPayloadCacheDirectory.configured(environment: ["HOME": "/home/u", "XDG_CACHE_HOME": "/x"]).cache?.directory == "/x/vireo/kernels")
        #expect(KernelPayloadCacheDirectory.configured(environment: ["HOME": "/home/u", "XDG_CACHE_HOME": "/x", "VIREO_CACHE_DIR": "/v"]).cache?.directory == "/v/kernels")
        let off = KernelPayloadCacheDirectory.configured(environment: ["HOME": "/home/u", "VIREO_KERNEL_CACHE": "off"])
        #expect(off.cache == nil && off.note.contains("VIREO_KERNEL_CACHE=off"))
        let flag = KernelPayloadCacheDirectory.configured(environment: ["HOME": "/home/u"], disabled: true)
        #expect(flag.cache == nil && flag.note.contains("--no-kernel-cache"))
        #expect(KernelPayloadCacheDirectory.configured(environment: [:]).cache == nil)
    }
}
