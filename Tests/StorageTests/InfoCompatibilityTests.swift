import Foundation
import Testing
@testable import Storage

/// `img info --output json` carries the same fields and values as `qemu-img info --output json`.
@Suite struct InfoCompatibilityTests {
    func qemuInfo(_ path: String, chain: Bool = false) throws -> Any {
        let (_, out, _) = try Qemu.run("qemu-img", ["info", "--output", "json"] + (chain ? ["--backing-chain"] : []) + [path])
        return try JSONSerialization.jsonObject(with: Data(out.utf8))
    }

    func ours(_ value: Any) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(try ImageInfo.json(value).utf8))
    }

    @Test func jsonMatchesQemuImg() throws {
        // Absolute paths, never chdir: other suites run in parallel in this process. Backing
        // names stay relative, as users write them (resolved against the overlay's directory).
        let dir = try TempDir()
        func at(_ name: String) -> String { dir.path + "/" + name }
        try Qemu.img("create", "-f", "raw", at("base.raw"), "3M")
        try Qemu.img("create", "-f", "qcow2", "-o", "compat=0.10", at("v2.qcow2"), "1G")
        try Qemu.img("create", "-f", "qcow2", "-o", "lazy_refcounts=on,extended_l2=on,refcount_bits=8", at("v3.qcow2"), "20G")
        try Qemu.img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", at("overlay.qcow2"))
        try Qemu.img("snapshot", "-c", "first", at("overlay.qcow2"))
        var vireoMade = QCOW2CreateOptions(size: 5 << 20)
        vireoMade.backingFile = "overlay.qcow2"
        vireoMade.backingFormat = "qcow2"
        try QCOW2Image.create(path: at("top.qcow2"), options: vireoMade)
        for name in ["base.raw", "v2.qcow2", "v3.qcow2", "overlay.qcow2", "top.qcow2"] {
            let expected = try qemuInfo(at(name)) as? NSDictionary
            let actual = try ours(try ImageInfo.collect(path: at(name)).jsonObject) as? NSDictionary
            #expect(expected != nil && actual == expected, "\(name): vireo \(String(describing: actual)) vs qemu \(String(describing: expected))")
        }
        let expectedChain = try qemuInfo(at("top.qcow2"), chain: true) as? NSArray
        let actualChain = try ours(try ImageInfo.collectChain(path: at("top.qcow2")).map(\.jsonObject)) as? NSArray
        #expect(expectedChain != nil && actualChain == expectedChain)
    }
}
