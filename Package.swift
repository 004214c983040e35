// swift-tools-version: 6.1
import PackageDescription

// Module layout follows ../shared/STYLE.md: arrows point down; nothing below VMM imports KVM.
let package = Package(
    name: "Vireo",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vireo", targets: ["vireo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        // C shim over <linux/kvm.h>: fixed-arity ioctl helpers and struct size checks.
        .target(name: "CKVM"),
        // Host decompressors for bzImage payloads (Debian -dev packages).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLZMA", path: "Sources/CLZMA", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // SHA-256 keys of the kernel payload cache (OpenSSL's libcrypto: nothing to compile here).
        .systemLibrary(name: "CLibXML2", path: "Sources/CLibXML2", pkgConfig: "libxml-2.0", providers: [.apt(["libxml2-dev"])]),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // The one contract between the daemon (and CLI) and the VMM: launch specification, control
        // routes and their JSON bodies, run status. Foundation only; both sides import it.
        .target(name: "VMContract"),
        .target(name: "KVM", dependencies: ["CKVM"]),
        // The VMM process's confinement: seccomp filters per thread kind, no_new_privs, capabilities.
        .target(name: "CSandbox"),
        .target(name: "Sandbox", dependencies: ["CSandbox"]),
        .target(name: "GuestMemory"),
        .target(name: "Virtio", dependencies: ["GuestMemory", "Devices", "Storage"]),
        .target(name: "Boot", dependencies: ["GuestMemory", "CZlib", "CLZMA", "CLZ4", "CZstd"]),
        .target(name: "Devices"),
        .target(name: "Storage", dependencies: ["CZlib", "CZstd"]),
        .target(name: "VMM", dependencies: [
            "KVM", "GuestMemory", "Boot", "Devices", "Virtio", "Storage", "CCrypto", "CZlib", "VMContract", "Sandbox",
        ]),
        // The per-VM control API (HTTP over a Unix socket), kept out of the VMM core.
        .target(name: "VMMControl", dependencies: [
            "VMM",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(name: "vireo", dependencies: [
            "VMM", "VMMControl", "KVM", "Boot", "Devices", "Storage", "Manager", "VMContract", "Sandbox",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // libFuzzer target for the snapshot reader (Fuzz/Snapshot/run.sh); a plain build makes
        // its replay tool.
        .executableTarget(name: "SnapshotFuzz", dependencies: ["VMM"], path: "Fuzz/Snapshot", exclude: ["run.sh"]),
        // The management layer: definitions, state store, the daemon and its REST API.
        .target(name: "Manager", dependencies: [
            "VMContract", "CLibXML2", "Storage",
            .product(name: "Yams", package: "Yams"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),

        // Helpers the test targets share (seeded random numbers, ...).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory", "Devices", "Storage", "TestSupport"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "GuestMemory"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "GuestMemory", "TestSupport"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CSandbox", "VMContract", "sandbox-probe"]),
        // What SandboxTests run to see a filter stop a process (a test can't confine itself).
        .executableTarget(name: "sandbox-probe", dependencies: ["Sandbox", "CSandbox"], path: "Tests/SandboxProbe"),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "TestSupport"]),
        // Includes VMMControl's tests: every guest-booting suite shares one serialized parent.
        .testTarget(name: "VMMTests", dependencies: ["VMM", "VMMControl", "KVM", "Boot", "Devices", "GuestMemory", "Storage", "TestSupport"]),
        .testTarget(name: "ManagerTests", dependencies: [
            "Manager", "VMContract", "Storage", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Runs the built `vireo` executable as a user would (exit statuses, error lines).
        .testTarget(name: "VireoCLITests", dependencies: ["vireo"]),
    ]
)
