import CLibXML2
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A small read-only element tree, enough for libvirt domain XML (text lives in leaf elements).
/// Text is kept verbatim: libvirt does not trim names, paths or command lines, nor do we.
final class XMLElementNode {
    let name: String
    let attributes: [String: String]
    let line: Int
    private(set) var children: [XMLElementNode] = []
    fileprivate(set) var text = ""

    init(name: String, attributes: [String: String], line: Int) {
        self.name = name
        self.attributes = attributes
        self.line = line
    }

    /// What the importer used. Everything else is reported as unsupported by one final sweep,
    /// so nothing can be dropped silently by forgetting a check.
    private(set) var isConsumed = false
    private(set) var consumedAttributes: Set<String> = []

    fileprivate func append(_ child: XMLElementNode) { children.append(child) }

    func children(named name: String) -> [XMLElementNode] { children.filter { $0.name == name } }

    var trimmedText: String { text.trimmingASCIISpaces() }

    func consume() { isConsumed = true }

    /// Marks the element, its attributes and everything under it as used: for an element the
    /// importer reports itself, with its reason. Depth is bounded by the parser's limit.
    func consumeSubtree() {
        isConsumed = true
        consumedAttributes = Set(attributes.keys)
        for child in children { child.consumeSubtree() }
    }

    /// Reads an attribute and marks it as used.
    func attribute(_ name: String) -> String? {
        consumedAttributes.insert(name)
        return attributes[name]
    }

    /// Marks an attribute as used only when it has one of the values Vireo implements.
    func consumeAttribute(_ name: String, ifIn accepted: Set<String>) {
        if let value = attributes[name], accepted.contains(value) { consumedAttributes.insert(name) }
    }
}

/// Builds an `XMLElementNode` tree from untrusted bytes.
///
/// Domain XML never carries a DTD, so any DOCTYPE or entity declaration is refused before the
/// parser runs: no external entity can be fetched and no entity expansion can balloon (XXE,
/// "billion laughs"). External entity resolution also stays off in the parser itself.
/// Depth and element count are bounded while parsing.
enum XMLTree {
    static func parse(_ data: Data) throws -> XMLElementNode {
        guard data.count <= DefinitionLimits.maxDocumentBytes else {
            throw DefinitionError.malformedDocument(
                reason: "\(data.count) bytes exceeds the limit of \(DefinitionLimits.maxDocumentBytes)")
        }
        guard String(validating: data, as: UTF8.self) != nil else {
            throw DefinitionError.malformedDocument(reason: "not valid UTF-8")
        }
        // The DOCTYPE scan below only works on the bytes the parser will read as they are: refuse
        // NULs (a BOM-less UTF-16 document is valid UTF-8 with NULs) and any other declared encoding.
        if data.contains(0) {
            throw DefinitionError.malformedDocument(reason: "XML contains NUL bytes (only UTF-8 is accepted)")
        }
        if let encoding = declaredEncoding(data), !["utf-8", "utf8"].contains(encoding.lowercased()) {
            throw DefinitionError.malformedDocument(
                reason: "XML encoding \(quoted(encoding)) is not accepted (only UTF-8)")
        }
        for marker in ["<!DOCTYPE", "<!ENTITY"] where data.firstRange(of: Data(marker.utf8)) != nil {
            throw DefinitionError.malformedDocument(reason: "XML with a DTD or entity declarations is not accepted")
        }
        let parser = XMLParser(data: data)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.shouldReportNamespacePrefixes = false
        let builder = TreeBuilder()
        parser.delegate = builder
        let finished = parser.parse()
        if builder.syntaxError || (builder.failure == nil && (!finished || builder.root == nil)),
           let diagnosis = libxml2Diagnosis(data) {
            throw DefinitionError.malformedDocument(
                reason: "XML syntax error at line \(diagnosis.line), column \(diagnosis.column): \(diagnosis.message)")
        }
        if let failure = builder.failure { throw failure }
        guard finished, let root = builder.root else {
            let reason = parser.parserError.map { describe($0, line: parser.lineNumber) } ?? "malformed XML"
            throw DefinitionError.malformedDocument(reason: reason)
        }
        return root
    }

    /// The encoding named in `<?xml … encoding="…"?>`, if the document starts with a declaration.
    static func declaredEncoding(_ data: Data) -> String? {
        var bytes = data.prefix(256)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        guard bytes.starts(with: Data("<?xml".utf8)), let end = bytes.firstRange(of: Data("?>".utf8)) else { return nil }
        let declaration = String(decoding: bytes[bytes.startIndex..<end.lowerBound], as: UTF8.self)
        guard let key = declaration.range(of: "encoding") else { return nil }
        let rest = declaration[key.upperBound...].drop { $0 == " " || $0 == "=" || $0 == "\t" }
        guard let quote = rest.first, quote == "'" || quote == "\"" else { return String(rest) }
        return String(rest.dropFirst().prefix { $0 != quote })
    }

    private static let libxml2Ready: Void = xmlInitParser()

    /// libxml2's own account of the first error in `data` (Foundation's XMLParser on Linux passes
    /// on only its number): line, column and message, e.g. "Opening and ending tag mismatch:
    /// memory line 3 and domain". nil when libxml2 finds none. Called only after the DTD and
    /// entity checks above; no network, no entity substitution.
    static func libxml2Diagnosis(_ data: Data) -> (line: Int, column: Int, message: String)? {
        _ = libxml2Ready
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            // libxml2 says nothing about an empty buffer: it just returns no document.
            return (data.count(where: { $0 == 0x0A }) + 1, 1, "Document is empty")
        }
        final class FirstError { var found: (line: Int, column: Int, message: String)? }
        let first = FirstError()
        // Our own handler for this parse: Foundation's XMLParser leaves its handler (and a context
        // that may be gone) installed on this thread; libxml2 would call it for our errors.
        xmlSetStructuredErrorFunc(Unmanaged.passUnretained(first).toOpaque()) { context, error in
            guard let context, let error else { return }
            let first = Unmanaged<FirstError>.fromOpaque(context).takeUnretainedValue()
            guard first.found == nil else { return }
            let message = error.pointee.message.map { String(cString: $0) }?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            first.found = (Int(error.pointee.line), Int(error.pointee.int2),
                           message.isEmpty ? "libxml2 error \(error.pointee.code)" : message)
        }
        defer { xmlSetStructuredErrorFunc(nil, nil) }
        let options = Int32(VIREO_XML_PARSE_NONET | VIREO_XML_PARSE_NOERROR | VIREO_XML_PARSE_NOWARNING)
        let document = withExtendedLifetime(first) {
            data.withUnsafeBytes { raw in
                xmlReadMemory(raw.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(raw.count), nil, "UTF-8", options)
            }
        }
        if let document { xmlFreeDoc(document) }
        xmlResetLastError()
        return first.found
    }

    private static func describe(_ error: any Error, line: Int) -> String {
        let message = (error as NSError).localizedDescription.trimmingASCIISpaces()
        return "XML syntax error at line \(line): \(message.isEmpty ? "malformed XML" : message)"
    }
}

private final class TreeBuilder: NSObject, XMLParserDelegate {
    var root: XMLElementNode?
    var failure: DefinitionError?
    /// The parser itself reported an error (libxml2 can then say what it was).
    var syntaxError = false
    private var stack: [XMLElementNode] = []
    private var elementCount = 0

    private func fail(_ parser: XMLParser, _ reason: String) {
        if failure == nil { failure = .malformedDocument(reason: reason) }
        parser.abortParsing()
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
        qualifiedName: String?, attributes: [String: String] = [:]
    ) {
        guard failure == nil else { return }
        elementCount += 1
        if elementCount > DefinitionLimits.maxXMLElements {
            return fail(parser, "more than \(DefinitionLimits.maxXMLElements) XML elements")
        }
        if stack.count >= DefinitionLimits.maxNestingDepth {
            return fail(parser, "nested too deeply")
        }
        let node = XMLElementNode(name: elementName, attributes: attributes, line: parser.lineNumber)
        if let parent = stack.last {
            parent.append(node)
        } else if root == nil {
            root = node
        }
        stack.append(node)
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        // libxml2 may run in recovery mode and close mismatched tags for us; refuse instead.
        guard let open = stack.popLast(), open.name == elementName else {
            return fail(parser, "XML syntax error at line \(parser.lineNumber): mismatched end tag </\(sanitized(elementName))>")
        }
    }

    func parserDidEndDocument(_ parser: XMLParser) {
        if !stack.isEmpty { fail(parser, "XML syntax error: unclosed element <\(sanitized(stack[stack.count - 1].name))>") }
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) {
        // Only libxml2's error number reaches us on Linux (its text does not, and Foundation's
        // ErrorCode names use Apple's numbering, which would mislabel it).
        let code = (parseError as NSError).code
        if failure == nil { syntaxError = true }
        fail(parser, "XML syntax error at line \(parser.lineNumber) (libxml2 error \(code))")
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        stack.last?.text += string
    }

    func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
        stack.last?.text += String(decoding: CDATABlock, as: UTF8.self)
    }

    // Belt and braces behind the DOCTYPE check: any DTD content stops the parse.
    func parser(_ parser: XMLParser, foundInternalEntityDeclarationWithName name: String, value: String?) {
        fail(parser, "XML with a DTD or entity declarations is not accepted")
    }

    func parser(
        _ parser: XMLParser, foundExternalEntityDeclarationWithName name: String, publicID: String?, systemID: String?
    ) {
        fail(parser, "XML with a DTD or entity declarations is not accepted")
    }

    func parser(_ parser: XMLParser, resolveExternalEntityName name: String, systemID: String?) -> Data? {
        fail(parser, "XML entity &\(sanitized(name)); is not defined (domain XML uses only the predefined ones)")
        return nil
    }
}
