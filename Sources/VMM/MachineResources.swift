import Storage
import Virtio

/// The host side of a machine, resolved before anything is built: disk images opened, TAPs opened
/// (or created and bridged) or passt started, MAC addresses fixed. The first of the two construction steps: a
/// machine is then assembled from these and either a boot request or a saved state, and a reboot
/// or a restore reuses them instead of opening everything again.
public final class MachineResources: @unchecked Sendable {
    /// The devices as resolved: every NIC has its MAC (generated ones included), so a snapshot
    /// records exactly what the guest saw.
    public let devices: DeviceOptions
    /// Each with write tracking for disk mirroring (`--copy-storage-all`), off unless migrating.
    let disks: [TrackedDisk]
    let networks: [any HostNetwork]
    /// Warnings about what was opened, one line each (a writable disk whose format was probed).
    public let notes: [String]
    private let closed = Guarded(false)

    /// Opens every disk and TAP the options name; on an error nothing stays open.
    public init(devices requested: DeviceOptions) throws {
        var devices = requested
        var disks: [TrackedDisk] = []
        var networks: [any HostNetwork] = []
        var notes: [String] = []
        do {
            for disk in requested.disks {
                let image = try DiskImage.open(path: disk.path, format: disk.format.map { ImageFormat(rawValue: $0.rawValue) ?? .raw },
                                               readOnly: disk.readOnly)
                if let raw = image as? RawImage, raw.probed, !raw.isReadOnly {
                    notes.append("disk \(disk.path): no format given, probed as raw; the guest may not write another format's signature into its first sector (give format=raw to lift this)")
                }
                disks.append(TrackedDisk(image))
            }
            for index in requested.networks.indices {
                let options = requested.networks[index]
                if case let .user(forwards) = options.attachment {
                    networks.append(try PasstNetworkBackend(forwards: forwards))
                } else {
                    networks.append(try TapNetworkBackend(options: options))
                }
                if devices.networks[index].mac == nil { devices.networks[index].mac = PCIPlatform.generatedMAC() }
            }
        } catch {
            for network in networks { network.close() }
            throw error
        }
        self.devices = devices
        self.disks = disks
        self.networks = networks
        self.notes = notes
    }

    /// Lets go of the disks' image locks while keeping them open: a migration source does so at
    /// the switch-over, so that a destination on the same host (shared storage) can take them.
    func releaseDiskLocks() {
        for disk in disks { (disk.inner as? any ExtentMapping)?.releaseLocks() }
    }

    /// Takes the disks' image locks again (a migration that failed after `releaseDiskLocks`);
    /// throws when another process took one meanwhile.
    func acquireDiskLocks() throws {
        for disk in disks { try (disk.inner as? any ExtentMapping)?.acquireLocks() }
    }

    /// Makes what the guest wrote durable.
    func flushDisks(log: (String) -> Void) {
        for disk in disks {
            do { try disk.flush() } catch { log("flushing a disk failed: \(error)") }
        }
    }

    /// Flushes the disks and lets go of the TAPs (once; later calls do nothing).
    public func release(log: (String) -> Void = { _ in }) {
        guard closed.update({ done -> Bool in defer { done = true }; return !done }) else { return }
        flushDisks(log: log)
        // The VM is over: another may use its disks now, even while this process lives on.
        releaseDiskLocks()
        for network in networks { network.close() }
    }
}
