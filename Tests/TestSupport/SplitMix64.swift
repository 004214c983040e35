/// A small deterministic generator (SplitMix64), so a failing randomized test can be replayed from
/// its seed. Shared by every test target that mutates or generates inputs.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniformly chosen value below `bound` (modulo bias is irrelevant for tests).
    public mutating func below(_ bound: UInt64) -> UInt64 { next() % bound }

    /// Generated a word at a time: tests run unoptimized, so per-byte loops would dominate their runtime.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var words = [UInt64](repeating: 0, count: count / 8 + 1)
        for i in words.indices { words[i] = next() }
        return words.withUnsafeBytes { Array($0.prefix(count)) }
    }
}
