import ArgumentParser

@main
struct Vireo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo",
        abstract: "A KVM virtualization stack: VMM, image tools and management.",
        subcommands: [Run.self, HostCheck.self, Img.self] + managementCommands
    )
}
