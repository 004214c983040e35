import GuestMemory

/// Guest RAM shaped like a real machine's: two adjacent regions (a buffer may cross between them)
/// and a third one past a hole (a buffer crossing into the hole is invalid).
func makeTestMemory() throws -> GuestMemory {
    try GuestMemory(ranges: [(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000),
                             (GuestAddress(0x40000), 0x1000)])
}

/// Start of the hole between the second and third regions.
let holeStart: UInt64 = 0x20000

/// A byte-for-byte copy of `memory` in new host pages, as a snapshot restore or a migration
/// target has it: the restored device must find everything there and nothing of the original.
func copyOf(_ memory: GuestMemory) throws -> GuestMemory {
    let copy = try GuestMemory(ranges: memory.regions.map { ($0.start, $0.size) })
    for region in memory.regions {
        try copy.writeBytes(memory.readBytes(at: region.start, count: Int(region.size)), to: region.start)
    }
    return copy
}
