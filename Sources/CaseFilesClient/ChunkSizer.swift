/// Chooses the size of each tus PATCH from the rate the previous ones went at (tus leaves chunk sizes to the
/// client). A request has a fixed cost on the server (an fsync, a SQLite commit, a round trip: about 4 ms),
/// so a fast link wants large chunks; a slow or flaky link wants small ones, since a cut loses the chunk in
/// flight and the progress shown moves once a chunk. Aiming each chunk at `targetSeconds` gives both.
///
/// Measured (BENCHMARKS.md, issue #16): on loopback the 8 MiB curl loop ran at 0.84x the 64 MiB one, while a
/// chunk sent over 1 MB/s takes 8 s at 8 MiB. The client holds two chunks in memory (one being sent, the next
/// being read and hashed), so `maximum` bounds its memory: 2 × 32 MiB.
public struct ChunkSizer: Sendable, Equatable {
    /// Bounds of an adaptive size, in bytes.
    public static let minimum = 1 << 20
    public static let maximum = 32 << 20
    /// The first chunk's size, before anything was measured.
    public static let initial = 8 << 20
    /// Each chunk should take about this long (seconds) at the rate seen so far.
    public static let targetSeconds = 2.0

    /// The size of the next chunk, in bytes.
    public private(set) var size: Int
    /// False for a size the user fixed (`--chunk-size`).
    public let adapts: Bool
    /// The smoothed rate (bytes/s), nil before the first chunk.
    public private(set) var rate: Double?

    /// A size that adapts, from `initial`.
    public static var adaptive: ChunkSizer { ChunkSizer(size: initial, adapts: true) }

    /// A size the user fixed, in bytes (no bounds beyond the caller's).
    public static func fixed(_ bytes: Int) -> ChunkSizer { ChunkSizer(size: bytes, adapts: false) }

    private init(size: Int, adapts: Bool) {
        self.size = size
        self.adapts = adapts
    }

    /// Records that a chunk of `bytes` took `seconds` from sending its first byte to its answer, and picks the
    /// next size: the power of two (bytes) nearest below `rate × targetSeconds`, within [minimum, maximum], and
    /// at most double or half the current size per chunk, so one odd measurement does not swing it.
    public mutating func record(bytes: Int, seconds: Double) {
        guard adapts, bytes > 0, seconds > 0 else { return }
        let observed = Double(bytes) / seconds
        // An even mix of the last measurement and those before it: follows a change within a few chunks.
        let smoothed = rate.map { ($0 + observed) / 2 } ?? observed
        rate = smoothed
        let wanted = smoothed * Self.targetSeconds
        var next = Self.minimum
        while next < Self.maximum && Double(next * 2) <= wanted { next *= 2 }
        size = min(max(next, size / 2), size * 2)
    }
}
