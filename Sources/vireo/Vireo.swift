import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct Vireo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo",
        abstract: "A KVM virtualization stack: VMM, image tools and management.",
        subcommands: [Run.self, HostCheck.self, SeccompPolicyCommand.self, Img.self] + managementCommands + poolCommands
    )

    /// Refuses to run setuid or setgid before reading any argument: every command opens files,
    /// devices and sockets the caller names, which a set-ID binary would open with the owner's
    /// rights (libvirt refuses the same way).
    static func main() {
        if getuid() != geteuid() || getgid() != getegid() {
            writeStandardError("vireo: refusing to run setuid or setgid (real uid \(getuid()), effective uid \(geteuid()); real gid \(getgid()), effective gid \(getegid())): remove the set-ID bit and give the user access to /dev/kvm instead\n")
            Glibc.exit(1)
        }
        Self.main(nil)
    }
}
