import GuestMemory

/// Guest RAM shaped like a real machine's: two adjacent regions (a buffer may cross between them)
/// and a third one past a hole (a buffer crossing into the hole is invalid).
func makeTestMemory() throws -> GuestMemory {
    try GuestMemory(ranges: [(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000),
                             (GuestAddress(0x40000), 0x1000)])
}

/// Start of the hole between the second and third regions.
let holeStart: UInt64 = 0x20000
