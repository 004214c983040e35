import KVM
import Virtio

/// virtio-net's backend on a host TAP opened with IFF_VNET_HDR: frames cross with their 12-byte
/// virtio_net_hdr_v1 untouched, so checksum and segmentation offloads pass straight through.
final class TapNetworkBackend: NetworkBackend {
    let tap: TapInterface
    let offloads: NetworkOffloads
    let attachment: NetworkOptions.Attachment

    /// Opens (or creates) the TAP; `bridge` adds it to a Linux bridge first. Both need
    /// CAP_NET_ADMIN unless the TAP exists and belongs to the user.
    init(options: NetworkOptions) throws {
        attachment = options.attachment
        switch options.attachment {
        case let .tap(name):
            tap = try TapInterface(name: name)
        case let .bridge(bridge):
            tap = try TapInterface(name: "")
            try tap.attach(toBridge: bridge)
            try tap.bringUp()
        case .user:
            throw KVMError.invalidArgument("user networking is passt's, not a TAP's")
        }
        // TAPs opened with IFF_VNET_HDR accept every TUN_F_* offload the kernel knows; probe by
        // setting them, and fall back to none on kernels that refuse.
        if options.offloads, (try? tap.setOffloads([.checksum, .tso4, .tso6])) != nil {
            offloads = [.checksum, .tso4, .tso6]
        } else {
            offloads = []
        }
        try tap.setOffloads([])
    }

    func send(_ frame: [UInt8]) throws {
        // A full TAP queue drops the frame, as a congested link would; the device counts it.
        guard try tap.send(frame) else { throw KVMError.invalidArgument("TAP \(tap.name) queue is full") }
    }

    func receive(maxLength: Int) throws -> [UInt8]? { try tap.receive(maxLength: maxLength) }

    func setOffloads(_ accepted: NetworkOffloads) throws {
        var flags: TapInterface.Offloads = []
        if accepted.contains(.checksum) { flags.insert(.checksum) }
        if accepted.contains(.tso4) { flags.insert(.tso4) }
        if accepted.contains(.tso6) { flags.insert(.tso6) }
        // TSO needs checksum offload (the kernel refuses TSO flags without TUN_F_CSUM).
        if !flags.isDisjoint(with: [.tso4, .tso6]) { flags.insert(.checksum) }
        try tap.setOffloads(flags)
    }
}
