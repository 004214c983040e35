import Foundation
import Testing

/// `vireo img convert -p`: qemu-img's progress line, "    (P/100%)" redrawn with carriage
/// returns, ending at 100% with a newline; nothing of it without -p or with -q.
@Suite struct ImgConvertProgressTests {
    @Test func progressClimbsToOneHundredPercentAndTheCopyIsExact() throws {
        let directory = NSTemporaryDirectory() + "vireo-progress-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // 16 MiB with data in every 2 MiB chunk (the converter's step), so progress has steps.
        var bytes = [UInt8](repeating: 0, count: 16 << 20)
        for index in stride(from: 0, to: bytes.count, by: 4096) { bytes[index] = UInt8(truncatingIfNeeded: index >> 12 | 1) }
        let source = directory + "/source.raw"
        try Data(bytes).write(to: URL(fileURLWithPath: source))

        let converted = try VireoBinary.run(["img", "convert", "-p", "-f", "raw", "-O", "qcow2", source, directory + "/out.qcow2"])
        #expect(converted.status == 0, "\(converted.stderr)")
        let records = converted.stdout.split(separator: "\r", omittingEmptySubsequences: true).map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let percents = records.compactMap { record -> Double? in
            guard record.hasPrefix("("), record.hasSuffix("/100%)") else { return nil }
            return Double(record.dropFirst().dropLast("/100%)".count))
        }
        #expect(percents.count == records.count, "every record is a progress line: \(records)")
        #expect(percents.count >= 3, "progress moved in steps: \(records)")
        #expect(percents == percents.sorted() && Set(percents).count == percents.count, "\(percents)")
        #expect(percents.last == 100)
        #expect(converted.stdout.unicodeScalars.last == "\n")   // ("\r\n" is one Character)

        // The copy itself, read back through the other direction.
        let back = try VireoBinary.run(["img", "convert", "-f", "qcow2", "-O", "raw", directory + "/out.qcow2", directory + "/back.raw"])
        #expect(back.status == 0 && !back.stdout.contains("/100%"), "\(back.stderr) \(back.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/back.raw")) == Data(bytes))

        let quiet = try VireoBinary.run(["img", "convert", "-p", "-q", "-f", "raw", "-O", "raw", source, directory + "/quiet.raw"])
        #expect(quiet.status == 0 && quiet.stdout.isEmpty, "\(quiet.stdout)")
    }
}
