import GuestMemory
@testable import KVM

/// A VM with 64 KiB of RAM whose code, at 0x1000, runs in real mode (CS base 0): the smallest
/// guest that produces every kind of exit, for tests at the KVM layer.
struct RealModeGuest {
    let vm: VirtualMachine
    let memory: GuestMemory

    init(code: [UInt8]) throws {
        vm = try KVMSystem().createVM()
        try vm.setTSSAddress(0xFFFB_D000)
        memory = try GuestMemory(ranges: [(GuestAddress(0), 0x10000)])
        try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: 0x10000, hostAddress: memory.regions[0].hostAddress)
        try memory.writeBytes(code, to: GuestAddress(0x1000))
    }

    /// vCPU 0, about to execute the code.
    func makeVCPU() throws -> VCPU {
        let vcpu = try vm.createVCPU(id: 0)
        var special = try vcpu.getSpecialRegisters()
        special.cs.base = 0; special.cs.selector = 0
        try vcpu.setSpecialRegisters(special)
        var registers = Registers()
        registers.rip = 0x1000
        try vcpu.setRegisters(registers)
        return vcpu
    }
}

extension VCPU {
    /// The next exit that is not a signal interruption.
    func nextExit() throws -> VCPUExit {
        while true {
            let exit = try run()
            if exit != .interrupted { return exit }
        }
    }
}
