import ArgumentParser
import Foundation
import Storage

struct ImgSnapshot: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshot", abstract: "List, create, apply or delete internal snapshots.")

    @Option(name: .customShort("c"), help: "Create a snapshot.") var create: String?
    @Option(name: .customShort("a"), help: "Apply (revert to) a snapshot.") var apply: String?
    @Option(name: .customShort("d"), help: "Delete a snapshot.") var delete: String?
    @Flag(name: .customShort("l"), help: "List snapshots.") var list = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String

    func validate() throws {
        let chosen = [create != nil, apply != nil, delete != nil, list].filter { $0 }.count
        guard chosen <= 1 else { throw ValidationError("choose one of -c, -a, -d, -l") }
    }

    func run() throws {
        try ImgSupport.run {
            if let create {
                try QCOW2Image.createSnapshot(path: filename, name: create)
            } else if let apply {
                try QCOW2Image.applySnapshot(path: filename, name: apply)
            } else if let delete {
                try QCOW2Image.deleteSnapshot(path: filename, name: delete)
            } else {
                let snapshots = try QCOW2Image.snapshots(path: filename)
                if !snapshots.isEmpty { print(Self.table(snapshots).joined(separator: "\n")) }
            }
        }
    }

    /// qemu-img's snapshot table layout.
    static func table(_ snapshots: [QCOW2Snapshot]) -> [String] {
        var lines = ["Snapshot list:", "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT"]
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        for s in snapshots {
            let date = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(s.dateSeconds)))
            let clockSeconds = s.vmClockNanoseconds / 1_000_000_000
            let clock = String(format: "%02llu:%02llu:%02llu.%03llu", clockSeconds / 3600, clockSeconds / 60 % 60,
                               clockSeconds % 60, s.vmClockNanoseconds / 1_000_000 % 1000)
            lines.append(pad(s.id, 10) + pad(s.name, 17) + leftPad(ImgSupport.humanSize(s.vmStateSize), 8)
                         + " " + date + " " + clock + leftPad(String(s.icount ?? 0), 11))
        }
        return lines
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    private static func leftPad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
