import Foundation
import GuestMemory
import Testing
@testable import Boot

/// An in-memory `BzImagePayloadCache` that records what Boot asked of it; entries can be
/// corrupted, made unreadable or refused to test Boot's checks without a file system.
final class RecordingPayloadCache: BzImagePayloadCache, @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: [UInt8]] = [:]
    private var unreadable: Set<String> = []
    var refuseStores: String?
    private(set) var stores = 0

    func key(for bzImage: [UInt8]) -> PayloadCacheKey? {
        // Not a strong hash, but distinct per test image: Boot only passes the key around.
        let digest = String(bzImage.count, radix: 16) + "-" + String(bzImage.reduce(0) { ($0 &* 31) &+ UInt64($1) }, radix: 16)
        return PayloadCacheKey(digest: digest, label: "test \(digest.prefix(8))…")
    }

    func load(_ key: PayloadCacheKey, maximumSize: Int) -> PayloadCacheLookup {
        lock.withLock {
            if unreadable.contains(key.digest) { return .unreadable("test: permission denied") }
            guard let bytes = entries[key.digest] else { return .miss }
            return bytes.count <= maximumSize ? .hit(bytes) : .unreadable("test: too large")
        }
    }

    func store(_ elf: [UInt8], for key: PayloadCacheKey) -> String? {
        lock.withLock {
            if let refuseStores { return refuseStores }
            stores += 1
            entries[key.digest] = elf
            unreadable.remove(key.digest)
            return nil
        }
    }

    var onlyEntry: [UInt8]? { lock.withLock { entries.count == 1 ? entries.first?.value : nil } }
    func replaceOnlyEntry(_ change: ([UInt8]) -> [UInt8]) {
        lock.withLock { if let (key, bytes) = entries.first { entries[key] = change(bytes) } }
    }
    func makeOnlyEntryUnreadable() { lock.withLock { if let key = entries.keys.first { unreadable.insert(key) } } }
}

@Suite("bzImage payload cache")
struct PayloadCacheTests {
    static let image = { () -> [UInt8] in
        TestImages.bzImage(payload: try! TestImages.kernelCompress(TestImages.innerELF, .xz))
    }()

    static func boot(_ cache: RecordingPayloadCache?) throws -> (plan: BootPlan, kernel: [UInt8]) {
        var request = TestImages.request(image)
        request.payloadCache = cache
        let memory = try TestImages.memory(64 << 20)
        let plan = try KernelLoader.load(request, into: memory)
        return (plan, try memory.bytes(0x100_0000, 0x2000))
    }

    static func payloadNote(_ plan: BootPlan) -> String {
        plan.notes.first { $0.hasPrefix("bzImage payload ") } ?? ""
    }

    /// tests/e2e/linux-boot.sh accepts a boot by this line, cached or not.
    static func matchesE2EPattern(_ note: String) -> Bool {
        note.range(of: #"^bzImage payload [a-z0-9]+ .* decompressed on host"#, options: .regularExpression) != nil
    }

    @Test("a second boot loads the same ELF from the cache instead of decompressing")
    func hitReturnsTheFreshDecompression() throws {
        let cache = RecordingPayloadCache()
        let first = try Self.boot(cache)
        let firstNote = Self.payloadNote(first.plan)
        #expect(firstNote.contains("decompressed on host in") && firstNote.hasSuffix("(cached for next boot)"), "\(firstNote)")
        #expect(Self.matchesE2EPattern(firstNote))
        var notes: [String] = []
        let fresh = try BzImagePayload.extract(Self.image, header: try SetupHeader(parsing: Self.image), notes: &notes).get()
        #expect(cache.onlyEntry == fresh.bytes)

        let second = try Self.boot(cache)
        let secondNote = Self.payloadNote(second.plan)
        #expect(secondNote.contains("decompressed on host earlier, loaded from cache (test "), "\(secondNote)")
        #expect(Self.matchesE2EPattern(secondNote))
        #expect(second.kernel == first.kernel)
        #expect(second.plan.entry == first.plan.entry)
        #expect(second.plan.format == .bzImageDecompressed(.xz))
        #expect(cache.stores == 1)
    }

    @Test("corrupt or truncated entries are rejected with a note and replaced",
          arguments: ["magic", "truncated", "grown", "header"])
    func corruptEntryIsReplaced(_ damage: String) throws {
        let cache = RecordingPayloadCache()
        _ = try Self.boot(cache)
        let good = try #require(cache.onlyEntry)
        cache.replaceOnlyEntry { bytes in
            var bytes = bytes
            switch damage {
            case "magic": bytes[0] = 0
            case "truncated": bytes.removeLast(bytes.count / 2)
            case "grown": bytes += [0, 0, 0, 0]
            default: bytes[0x38] = 0   // e_phnum of an ELF64 header
            }
            return bytes
        }
        let plan = try Self.boot(cache).plan
        #expect(plan.notes.contains { $0.hasPrefix("cached bzImage payload (test ") && $0.contains("rejected") })
        #expect(Self.payloadNote(plan).contains("decompressed on host in"))
        #expect(cache.onlyEntry == good)
        #expect(cache.stores == 2)
    }

    @Test("an unreadable entry is decompressed again and rewritten")
    func unreadableEntryIsReplaced() throws {
        let cache = RecordingPayloadCache()
        _ = try Self.boot(cache)
        cache.makeOnlyEntryUnreadable()
        let plan = try Self.boot(cache).plan
        #expect(plan.notes.contains { $0.contains("unreadable: test: permission denied; decompressing again") })
        #expect(Self.payloadNote(plan).hasSuffix("(cached for next boot)"))
        #expect(Self.payloadNote(try Self.boot(cache).plan).contains("loaded from cache"))
    }

    @Test("a cache that cannot store still boots, with a note")
    func unwritableCacheStillBoots() throws {
        let cache = RecordingPayloadCache()
        cache.refuseStores = "cannot create /nowhere: Permission denied"
        let plan = try Self.boot(cache).plan
        #expect(plan.format == .bzImageDecompressed(.xz))
        #expect(Self.payloadNote(plan).hasSuffix("(not cached: cannot create /nowhere: Permission denied)"))
        #expect(cache.onlyEntry == nil)
    }

    @Test("without a cache the note is unchanged")
    func noCache() throws {
        let note = Self.payloadNote(try Self.boot(nil).plan)
        #expect(note.contains("decompressed on host in") && note.hasSuffix(" ms"), "\(note)")
    }
}
