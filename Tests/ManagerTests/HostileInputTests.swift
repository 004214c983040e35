import Foundation
import Testing
@testable import Manager

/// Definitions come from users and from whatever they downloaded: every size, count and depth
/// is bounded, and nothing is resolved from outside the document.
@Suite("Hostile definitions")
struct HostileInputTests {
    static let header = "name: vm1\nmemory: 512M\nos: {kernel: /k}\n"

    func expectMalformed(_ body: () throws -> Void, _ expected: String) {
        do {
            try body()
            Issue.record("accepted")
        } catch let error as DefinitionError {
            #expect(error.description == expected)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func tenThousandDisksAreRejectedByCount() {
        let disks = (0..<10_000).map { "  - {source: /d\($0), target: vd\($0)}" }.joined(separator: "\n")
        expectMalformed({ _ = try VMDefinition(yaml: Self.header + "disks:\n" + disks) },
                        "disks: 10000 disks exceed the limit of 64")
        let xmlDisks = (0..<10_000).map { "<disk type='file'><source file='/d\($0)'/><target dev='vd\($0)'/></disk>" }
        expectMalformed({ _ = try ImportResult(libvirtXML: LibvirtErrorTests.domain(xmlDisks.joined())) },
                        "definition: more than 10000 XML elements")
        let fewerDisks = (0..<65).map { "<disk type='file'><source file='/d\($0)'/><target dev='vd\($0)'/></disk>" }
        expectMalformed({ _ = try ImportResult(libvirtXML: LibvirtErrorTests.domain(fewerDisks.joined())) },
                        "devices/disk: 65 disks exceed the limit of 64")
    }

    @Test func sixtyFourDisksAreAccepted() throws {
        let disks = (0..<64).map { "  - {source: /d\($0), target: vd\($0)}" }.joined(separator: "\n")
        #expect(try VMDefinition(yaml: Self.header + "disks:\n" + disks).disks.count == 64)
    }

    @Test func tooManyInterfaces() {
        let nics = (0..<33).map { "  - {type: tap, source: tap\($0)}" }.joined(separator: "\n")
        expectMalformed({ _ = try VMDefinition(yaml: Self.header + "interfaces:\n" + nics) },
                        "interfaces: 33 interfaces exceed the limit of 32")
    }

    @Test func hugeNumbers() {
        expectMalformed({ _ = try VMDefinition(yaml: "name: a\nmemory: 18446744073709551615\nos: {kernel: /k}") },
                        "memory: 18446744073709551615 bytes exceeds the maximum of 16TiB")
        expectMalformed({ _ = try VMDefinition(yaml: "name: a\nmemory: 18446744073709551616\nos: {kernel: /k}") },
                        "memory: '18446744073709551616' is too large")
        expectMalformed({ _ = try VMDefinition(yaml: "name: a\nmemory: {value: 18446744073709551616, unit: K}\nos: {kernel: /k}") },
                        "memory.value: '18446744073709551616' is too large")
        expectMalformed({ _ = try VMDefinition(yaml: "name: a\nmemory: {value: 18014398509481984, unit: K}\nos: {kernel: /k}") },
                        "memory.unit: '18014398509481984 K' is too large")
        expectMalformed({ _ = try VMDefinition(yaml: Self.header + "vcpus: 9223372036854775808") },
                        "vcpus: expected a whole number")
        expectMalformed({ _ = try VMDefinition(yaml: "{\"name\": \"a\", \"memory\": 1e300, \"os\": {\"kernel\": \"/k\"}}") },
                        "memory: expected a size such as 512MiB, a number of bytes, or {value, unit}")
        expectMalformed({ _ = try VMDefinition(yaml: "{\"name\": \"a\", \"memory\": -4096, \"os\": {\"kernel\": \"/k\"}}") },
                        "memory: '-4096' is negative")
    }

    @Test func deeplyNestedYAMLIsRefusedBeforeParsing() {
        // 250 passes the pre-scan, so Yams really composes 250 levels before the exact check.
        for depth in [40, 250, 100_000] {
            let flow = Self.header + "disks: " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            expectMalformed({ _ = try VMDefinition(yaml: flow) }, "definition: nested too deeply")
        }
        let block = (0..<300).map { String(repeating: " ", count: $0) + "- " }.joined(separator: "\n") + "x"
        expectMalformed({ _ = try VMDefinition(yaml: Self.header + "disks:\n" + block) }, "definition: nested too deeply")
        let compact = Self.header + "disks: " + String(repeating: "- ", count: 5_000) + "x"
        expectMalformed({ _ = try VMDefinition(yaml: compact) }, "definition: nested too deeply")
    }

    @Test func nestingBoundNeverUnderestimates() throws {
        // The pre-scan is only safe if its bound is ≥ the real depth; check against real parses.
        let samples = [
            "a:\n  b:\n    c: [1, {d: [2]}]\n", "- - - x\n", "a:\n- b:\n  - c:\n    - d\n", "? a\n: b\n",
            NativeFormatTests.full, "{a: {b: {c: {d: {e: 1}}}}}",
        ]
        for sample in samples {
            let bound = NativeFormat.nestingUpperBound(sample)
            let depth = try #require(try yamlDepth(sample))
            #expect(bound >= depth, "\(sample)")
        }
    }

    @Test func invalidUTF8() {
        var data = Data(Self.header.utf8)
        data.append(contentsOf: [0xff, 0xfe, 0xc3])
        expectMalformed({ _ = try VMDefinition(yaml: data) }, "definition: not valid UTF-8")
        var xml = Data(LibvirtErrorTests.domain().utf8)
        xml.insert(contentsOf: [0xc3, 0x28], at: 30)
        expectMalformed({ _ = try ImportResult(libvirtXML: xml) }, "definition: not valid UTF-8")
    }

    @Test func oversizedDocuments() {
        let big = Self.header + "# " + String(repeating: "x", count: DefinitionLimits.maxDocumentBytes)
        expectMalformed({ _ = try VMDefinition(yaml: big) }, "definition: \(big.utf8.count) bytes exceeds the limit of 1048576")
        let bigXML = LibvirtErrorTests.domain(extra: "<!-- " + String(repeating: "x", count: DefinitionLimits.maxDocumentBytes) + " -->")
        expectMalformed({ _ = try ImportResult(libvirtXML: bigXML) },
                        "definition: \(bigXML.utf8.count) bytes exceeds the limit of 1048576")
    }

    @Test func yamlAliasesCannotMultiplyWork() throws {
        // A "billion laughs" in YAML: 10^9 scalars through aliases; expansion is counted and stopped.
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for level in 1..<9 { lines.append("a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]") }
        let started = ContinuousClock.now
        expectMalformed({ _ = try VMDefinition(yaml: lines.joined(separator: "\n")) },
                        "definition: more than 100000 values")
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func externalEntitiesAreNeverResolved() throws {
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-xxe-\(UUID().uuidString)")
        try "TOPSECRET".write(to: secret, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: secret) }
        let xxe = """
            <?xml version="1.0"?>
            <!DOCTYPE domain [<!ENTITY xxe SYSTEM "file://\(secret.path)">]>
            <domain type='kvm'><name>&xxe;</name><memory unit='MiB'>512</memory>
            <os><type>hvm</type><kernel>/k</kernel></os></domain>
            """
        expectMalformed({ _ = try ImportResult(libvirtXML: xxe) },
                        "definition: XML with a DTD or entity declarations is not accepted")
        // Without a DOCTYPE there is nowhere to declare the entity; a reference alone is refused.
        expectMalformed({ _ = try ImportResult(libvirtXML: LibvirtErrorTests.domain(name: "<name>&xxe;</name>")) },
                        "definition: XML entity &xxe; is not defined (domain XML uses only the predefined ones)")
    }

    @Test func otherEncodingsCannotSmuggleADoctypePastTheCheck() {
        // BOM-less UTF-16: "<!DOCTYPE" is spread over NULs and is valid UTF-8 byte-wise.
        let utf16 = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><domain/>"
        var data = Data()
        for unit in utf16.utf16 { data.append(UInt8(unit & 0xff)); data.append(UInt8(unit >> 8)) }
        expectMalformed({ _ = try ImportResult(libvirtXML: data) }, "definition: XML contains NUL bytes (only UTF-8 is accepted)")
        let utf7 = "<?xml version='1.0' encoding='UTF-7'?>+ADw-!DOCTYPE d+AD4-<domain type='kvm'/>"
        expectMalformed({ _ = try ImportResult(libvirtXML: utf7) }, "definition: XML encoding 'UTF-7' is not accepted (only UTF-8)")
        let declaredUTF8 = "<?xml version='1.0' encoding='UTF-8'?>" + LibvirtErrorTests.domain()
        #expect(throws: Never.self) { try ImportResult(libvirtXML: declaredUTF8) }
    }

    @Test func manyUnsupportedSiblingsAreReportedInLinearTime() throws {
        let inputs = String(repeating: "<input type='tablet' bus='usb'/>", count: 9_000)
        let started = ContinuousClock.now
        let result = try ImportResult(libvirtXML: LibvirtErrorTests.domain(inputs))
        #expect(result.unsupported.count == 9_000)
        #expect(result.unsupported.last == "devices/input[9000] (type=tablet)")
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    @Test func billionLaughsXMLIsRefused() {
        var entities = "<!ENTITY lol \"lol\">"
        for level in 1...9 { entities += "<!ENTITY lol\(level) \"" + String(repeating: "&lol\(level == 1 ? "" : "\(level - 1)");", count: 10) + "\">" }
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE domain [\(entities)]><domain type='kvm'><name>&lol9;</name></domain>"
        expectMalformed({ _ = try ImportResult(libvirtXML: bomb) }, "definition: XML with a DTD or entity declarations is not accepted")
    }

    @Test func deeplyNestedXML() {
        let deep = String(repeating: "<x>", count: 5_000) + String(repeating: "</x>", count: 5_000)
        expectMalformed({ _ = try ImportResult(libvirtXML: LibvirtErrorTests.domain(extra: deep)) }, "definition: nested too deeply")
    }

    @Test func controlCharactersInValuesAreEscapedInMessages() {
        expectMalformed({ _ = try VMDefinition(yaml: "name: \"vm\\e[31mred\"\nmemory: 1G\nos: {kernel: /k}") },
                        "name: 'vm\\x1b[31mred' contains '\\x1b' (allowed: letters, digits, '.', '_', '-')")
    }

    @Test func predefinedAndCharacterEntitiesStillWork() throws {
        let xml = LibvirtErrorTests.domain(os: "<os><type>hvm</type><kernel>/k</kernel><cmdline>a&amp;b&#65;&lt;</cmdline></os>")
        #expect(try ImportResult(libvirtXML: xml).definition.os.cmdline == "a&bA<")
    }
}

import Yams

/// The real nesting depth of a YAML document (the document itself is depth 1).
func yamlDepth(_ text: String) throws -> Int? {
    func depth(_ node: Node) -> Int {
        switch node {
        case .scalar: 1
        case .mapping(let mapping): 1 + (mapping.map { max(depth($0.key), depth($0.value)) }.max() ?? 0)
        case .sequence(let sequence): 1 + (sequence.map(depth).max() ?? 0)
        }
    }
    return try Yams.compose(yaml: text).map(depth)
}
