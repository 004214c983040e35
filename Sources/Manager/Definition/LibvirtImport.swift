import VMContract
import Foundation

/// A libvirt domain imported as a Vireo definition, with what Vireo did not take from it.
public struct ImportResult: Equatable, Sendable {
    public var definition: VMDefinition
    /// Elements and attributes of the input that Vireo does not implement and therefore ignored,
    /// as XPath-like paths: "devices/graphics (type=vnc)", "devices/disk[1]/driver (cache=none)".
    /// Shown to the user at define time; never dropped silently.
    public var unsupported: [String]
    /// What the import changed so that Vireo could take it, one line each: "memory: 1000001 KiB
    /// rounded up to 1000004 KiB (a whole number of 4 KiB pages)".
    public var adjusted: [String]

    public init(definition: VMDefinition, unsupported: [String], adjusted: [String] = []) {
        self.definition = definition
        self.unsupported = unsupported
        self.adjusted = adjusted
    }

    /// Imports libvirt domain XML (the KVM subset in docs/vm-definition.md). Bad values are errors naming
    /// the element; elements Vireo does not implement are listed in `unsupported`.
    public init(libvirtXML: String) throws {
        try self.init(libvirtXML: Data(libvirtXML.utf8))
    }

    public init(libvirtXML data: Data) throws {
        let root = try XMLTree.parse(data)
        var importer = LibvirtImporter()
        definition = try importer.importDomain(root)
        unsupported = importer.unsupported
        adjusted = importer.adjusted
    }
}

/// Namespace of Vireo's own settings inside <metadata>, where libvirt keeps application data.
let vireoXMLNamespace = "https://vireo.dev/xmlns/domain/1"

struct LibvirtImporter {
    var unsupported: [String] = []
    var adjusted: [String] = []

    mutating func importDomain(_ root: XMLElementNode) throws -> VMDefinition {
        guard root.name == "domain" else {
            throw DefinitionError.invalidValue(
                field: root.name, reason: "root element is \(quoted(root.name)) (expected domain)")
        }
        root.consume()
        guard let type = root.attribute("type") else {
            throw DefinitionError.invalidValue(field: "domain", reason: "missing type attribute (expected kvm)")
        }
        guard type == "kvm" else {
            if type == "qemu" {
                // virt-install's choice where /dev/kvm was missing: QEMU emulating the CPU in software.
                throw DefinitionError.invalidValue(field: "domain", reason: "type 'qemu' (QEMU's software CPU emulation, TCG) is not supported: Vireo runs guests on KVM only; change it to <domain type='kvm'> (the host needs /dev/kvm)")
            }
            throw DefinitionError.invalidValue(field: "domain", reason: "type \(quoted(type)) is not supported (expected kvm)")
        }
        guard let nameElement = try single("name", in: root, at: "") else { throw DefinitionError.missing(field: "name") }
        guard let memoryElement = try single("memory", in: root, at: "") else {
            throw DefinitionError.missing(field: "memory")
        }
        let memory = pageRounded(try size(memoryElement, at: "memory"), field: "memory")
        var definition = VMDefinition(
            name: nameElement.text,
            uuid: try single("uuid", in: root, at: "").map { try Check.uuid($0.trimmedText, field: "uuid") } ?? UUID(),
            memory: memory,
            currentMemory: try single("currentMemory", in: root, at: "").map {
                pageRounded(try size($0, at: "currentMemory"), field: "currentMemory")
            },
            vcpus: try vcpus(in: root),
            os: try os(in: root),
            console: SerialConsole(type: .none))
        definition.onPoweroff = try lifecycle("on_poweroff", in: root) ?? .destroy
        definition.onReboot = try lifecycle("on_reboot", in: root) ?? .restart
        definition.onCrash = try lifecycle("on_crash", in: root) ?? .destroy
        definition.autostart = try autostart(in: root)
        var diskPaths: [String] = []
        var interfacePaths: [(path: String, sourceElement: String)] = []
        if let devices = try single("devices", in: root, at: "") {
            try importDevices(devices, into: &definition, diskPaths: &diskPaths, interfacePaths: &interfacePaths)
        }
        try importTuning(from: root, into: &definition)
        try definition.validate(paths: Self.paths(
            disks: diskPaths, interfaces: interfacePaths, blkioDevices: definition.blkiotune.devices.count))
        reportUnconsumed(in: root, at: "")
        return definition
    }

    /// Field paths as the XML spells them, for the checks shared with the native format.
    private static func paths(
        disks: [String], interfaces: [(path: String, sourceElement: String)], blkioDevices: Int
    ) -> FieldPaths {
        { field in
            switch field {
            case .name: "name"
            case .memory: "memory"
            case .currentMemory: "currentMemory"
            case .vcpus: "vcpu"
            case .os: "os"
            case .kernel: "os/kernel"
            case .initrd: "os/initrd"
            case .cmdline: "os/cmdline"
            case .firmware: "os/loader"
            case .nvram: "os/nvram"
            case .bootOrder: "os/boot"
            case .disks: "devices/disk"
            case .interfaces: "devices/interface"
            case .disk(let index, let sub):
                "\(index < disks.count ? disks[index] : "devices/disk")/\(sub.rawValue)"
            case .interface(let index, .source):
                index < interfaces.count ? "\(interfaces[index].path)/\(interfaces[index].sourceElement)"
                    : "devices/interface/source"
            case .interface(let index, .mac):
                "\(index < interfaces.count ? interfaces[index].path : "devices/interface")/mac"
            case .cputune(let sub): "cputune/\(sub.rawValue)"
            case .memtune(let sub): "memtune/\(sub.libvirtName)"
            case .blkiotune: "blkiotune/weight"
            case .blkioDevices: "blkiotune/device"
            case .blkioDevice(let index, let sub):
                "blkiotune/\(blkioDevices > 1 ? "device[\(index + 1)]" : "device")/\(sub.libvirtName)"
            }
        }
    }

    /// libvirt counts memory in KiB and accepts any number of them; a VM's RAM is whole 4 KiB
    /// pages. Rounded up (the guest gets at least what was asked), and said so.
    private mutating func pageRounded(_ bytes: UInt64, field: String) -> UInt64 {
        let alignment = DefinitionLimits.memoryAlignment
        // (Below the minimum, validation reports the size as given.)
        guard bytes % alignment != 0, bytes >= DefinitionLimits.minMemory, bytes <= UInt64.max - alignment else { return bytes }
        let rounded = (bytes + alignment - 1) / alignment * alignment
        adjusted.append("\(field): \(bytes / 1024) KiB rounded up to \(rounded / 1024) KiB (a whole number of 4 KiB pages)")
        return rounded
    }

    private mutating func vcpus(in root: XMLElementNode) throws -> Int {
        guard let element = try single("vcpu", in: root, at: "") else { return 1 }
        element.consumeAttribute("placement", ifIn: ["static"])
        guard let count = Int(element.trimmedText) else {
            throw DefinitionError.invalidValue(field: "vcpu", reason: "\(quoted(element.trimmedText)) is not a number")
        }
        return count
    }

    private mutating func os(in root: XMLElementNode) throws -> OSBoot {
        guard let os = try single("os", in: root, at: "") else { throw DefinitionError.missing(field: "os") }
        if let type = try single("type", in: os, at: "os") {
            guard type.trimmedText == "hvm" else {
                throw DefinitionError.invalidValue(
                    field: "os/type", reason: "\(quoted(type.trimmedText)) is not supported (expected hvm)")
            }
            if let arch = type.attribute("arch"), arch != "x86_64" {
                throw DefinitionError.invalidValue(
                    field: "os/type", reason: "arch \(quoted(arch)) is not supported (expected x86_64)")
            }
        }
        // With a <kernel>, Vireo boots it directly: <loader>, <nvram>, <boot> and a firmware
        // attribute are reported as ignored, as they always were.
        if let kernel = try single("kernel", in: os, at: "os") {
            var boot = OSBoot(kernel: kernel.text)
            boot.initrd = try single("initrd", in: os, at: "os")?.text
            boot.cmdline = try single("cmdline", in: os, at: "os")?.text ?? ""
            return boot
        }
        // Without one, the firmware boots the disks: hvm's own default, as in libvirt.
        return try firmwareBoot(in: os)
    }

    /// `<os firmware='efi'>`, `<loader type='rom|pflash'>PATH</loader>` (Debian's SeaBIOS and
    /// OVMF images stand for bios and uefi; any other path is a firmware file), neither: bios
    /// (libvirt's default for a kvm hvm domain); `<nvram>PATH</nvram>`; `<boot dev=…/>` in order.
    private mutating func firmwareBoot(in os: XMLElementNode) throws -> OSBoot {
        let requested = os.attribute("firmware")
        if let requested, !["bios", "efi"].contains(requested) {
            throw DefinitionError.invalidValue(
                field: "os", reason: "firmware \(quoted(requested)) is not supported (expected bios or efi)")
        }
        var firmware: Firmware = requested == "efi" ? .uefi : .bios
        if let loader = try single("loader", in: os, at: "os") {
            // A read-only image without secure boot is what Vireo maps; secure='yes' (OVMF's
            // secure boot needs SMM, which Vireo lacks), stateless and the like are reported.
            loader.consumeAttribute("type", ifIn: ["rom", "pflash"])
            loader.consumeAttribute("readonly", ifIn: ["yes"])
            loader.consumeAttribute("secure", ifIn: ["no"])
            if !loader.trimmedText.isEmpty {
                let named = Firmware(path: loader.text)
                if let requested, named == (requested == "efi" ? .bios : .uefi) {
                    throw DefinitionError.invalidValue(
                        field: "os/loader",
                        reason: "\(quoted(loader.text)) is \(named == .bios ? "SeaBIOS" : "OVMF"), but the os firmware attribute is \(quoted(requested))")
                }
                firmware = named
            } else if requested == nil {
                throw DefinitionError.invalidValue(
                    field: "os/loader", reason: "has no path (name the firmware file, or write <os firmware='efi'>)")
            }
        }
        var boot = OSBoot(firmware: firmware)
        if let nvram = try single("nvram", in: os, at: "os"), !nvram.trimmedText.isEmpty {
            // A template is what libvirt would copy into a missing store; Vireo does not create
            // one, so the attribute is left to be reported.
            boot.nvram = nvram.text
        }
        let paths = Self.childPaths(of: os, at: "os")
        boot.bootOrder = try os.children(named: "boot").map { element in
            element.consume()
            let path = paths[ObjectIdentifier(element)] ?? "os/boot"
            guard let device = element.attribute("dev") else {
                throw DefinitionError.invalidValue(field: path, reason: "missing dev attribute")
            }
            return try Check.oneOf(device, BootDevice.self, noun: "boot device", field: path)
        }
        if boot.bootOrder.isEmpty { boot.bootOrder = [.hd] }
        return boot
    }

    private mutating func lifecycle(_ name: String, in root: XMLElementNode) throws -> LifecycleAction? {
        guard let element = try single(name, in: root, at: "") else { return nil }
        return try Check.oneOf(element.trimmedText, LifecycleAction.self, noun: "action", field: name)
    }

    /// Reads <metadata><vireo:vm xmlns:vireo="…"><vireo:autostart>yes</…>; other metadata is reported.
    private mutating func autostart(in root: XMLElementNode) throws -> Bool {
        guard let metadata = try single("metadata", in: root, at: "") else { return false }
        var autostart = false
        for child in metadata.children {
            guard let prefix = Self.vireoPrefix(of: child), child.name == prefix + "vm" else { continue }
            child.consume()
            for setting in child.children where setting.name == prefix + "autostart" {
                setting.consume()
                switch setting.trimmedText {
                case "yes": autostart = true
                case "no": autostart = false
                default:
                    throw DefinitionError.invalidValue(
                        field: "metadata/\(child.name)/\(setting.name)",
                        reason: "\(quoted(setting.trimmedText)) is not yes or no")
                }
            }
        }
        return autostart
    }

    /// "vireo:" when the element declares our namespace for its own prefix, "" for a default
    /// namespace declaration, nil when the element is not ours.
    private static func vireoPrefix(of element: XMLElementNode) -> String? {
        let parts = element.name.split(separator: ":", maxSplits: 1)
        if parts.count == 2 {
            return element.attributes["xmlns:\(parts[0])"] == vireoXMLNamespace ? "\(parts[0]):" : nil
        }
        return element.attributes["xmlns"] == vireoXMLNamespace ? "" : nil
    }

    // MARK: - Shared helpers

    /// A size element: digits in the text, unit attribute (KiB when absent, as libvirt).
    func size(_ element: XMLElementNode, at path: String) throws -> UInt64 {
        let text = element.trimmedText
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw DefinitionError.invalidValue(field: path, reason: "\(quoted(text)) is not a number")
        }
        guard let value = UInt64(text) else {
            throw DefinitionError.invalidValue(field: path, reason: "\(quoted(text)) is too large")
        }
        let unit = element.attribute("unit") ?? "KiB"
        switch ByteSize.scale(value, unit: unit) {
        case .success(let bytes): return bytes
        case .failure(.unknownUnit): throw DefinitionError.invalidValue(field: path, reason: "unknown unit \(quoted(unit))")
        case .failure: throw DefinitionError.invalidValue(field: path, reason: "\(quoted("\(text) \(unit)")) is too large")
        }
    }

    /// The one child called `name`, marked as used; nil if absent. Two of them is an error, not a guess.
    func single(_ name: String, in parent: XMLElementNode, at parentPath: String) throws -> XMLElementNode? {
        let matches = parent.children(named: name)
        if matches.count > 1 {
            throw DefinitionError.invalidValue(field: Self.join(parentPath, name), reason: "appears more than once")
        }
        matches.first?.consume()
        return matches.first
    }

    /// XPath-style paths of all children of `parent`, with a 1-based index where siblings share
    /// a name ("devices/disk[2]"). One pass, so 10,000 siblings cost 10,000 steps, not 10^8.
    static func childPaths(of parent: XMLElementNode, at parentPath: String) -> [ObjectIdentifier: String] {
        var totals: [String: Int] = [:]
        for child in parent.children { totals[child.name, default: 0] += 1 }
        var seen: [String: Int] = [:]
        var paths: [ObjectIdentifier: String] = [:]
        for child in parent.children {
            let ordinal = seen[child.name, default: 0] + 1
            seen[child.name] = ordinal
            let step = totals[child.name, default: 0] > 1 ? "\(child.name)[\(ordinal)]" : child.name
            paths[ObjectIdentifier(child)] = join(parentPath, step)
        }
        return paths
    }

    static func join(_ parent: String, _ name: String) -> String { parent.isEmpty ? name : "\(parent)/\(name)" }

    /// Reports an element Vireo ignores, with the attribute that says what kind it is.
    mutating func reportElement(_ element: XMLElementNode, at path: String) {
        let kind = ["type", "mode", "model", "name"].lazy.compactMap { key in
            element.attributes[key].map { "\(key)=\(sanitized($0))" }
        }.first
        unsupported.append(kind.map { "\(path) (\($0))" } ?? path)
    }

    /// The final sweep: every element the importer did not use is reported whole, and every
    /// unused attribute of a used element is listed (namespace declarations are syntax, skipped).
    /// Depth is bounded by the XML tree's own limit.
    mutating func reportUnconsumed(in element: XMLElementNode, at path: String) {
        let extra = element.attributes.keys
            .filter { !element.consumedAttributes.contains($0) && $0 != "xmlns" && !$0.hasPrefix("xmlns:") }
            .sorted()
        if !extra.isEmpty {
            let listed = extra.map { "\($0)=\(sanitized(element.attributes[$0] ?? ""))" }.joined(separator: ", ")
            unsupported.append("\(path.isEmpty ? "domain" : path) (\(listed))")
        }
        let paths = Self.childPaths(of: element, at: path)
        for child in element.children {
            let childPath = paths[ObjectIdentifier(child)] ?? Self.join(path, child.name)
            if child.isConsumed {
                reportUnconsumed(in: child, at: childPath)
            } else {
                reportElement(child, at: childPath)
            }
        }
    }
}
