/// Where each part of a blob's multipart upload starts, from the blob's first part size alone, so the committed
/// offset (the metadata store's) is enough to know which parts are whole and which part the tail belongs to.
///
/// Parts grow because S3 allows at most 10,000 parts to an upload and a deferred-length upload does not know its
/// size: the part size doubles every 1,000 parts. Part `n` (from 1) holds `base << ((n - 1) / 1000)` bytes, so
/// tier `t` (parts 1000t+1 ... 1000t+1000) holds `1000 × base × 2^t` bytes and the first `t` tiers together
/// `1000 × base × (2^t - 1)`. With the default 8 MiB: 7.8 GiB in 8 MiB parts, 23.4 GiB by part 2,000 (16 MiB),
/// 117 GiB by part 4,000 (64 MiB), and 10,000 parts hold 1000 × 8 MiB × 1023 ≈ 7.99 TiB, the last ones of
/// 4 GiB (S3's largest part is 5 GiB). The last part of a completed upload is the tail, of any size.
public struct S3PartLayout: Sendable, Equatable {
    /// The size of parts 1 to 1,000, in bytes.
    public let basePartSize: Int64
    public static let partsPerTier = 1_000
    /// S3's limit (Amazon S3 User Guide, "Multipart upload limits").
    public static let maxParts = 10_000

    public init(basePartSize: Int64) {
        precondition(basePartSize > 0)
        self.basePartSize = basePartSize
    }

    /// The size of part `number` (1 to `maxParts`), in bytes.
    public func size(ofPart number: Int) -> Int64 {
        basePartSize << Int64((number - 1) / Self.partsPerTier)
    }

    /// The blob offset of part `number`'s first byte (`number` up to `maxParts + 1`, whose start is `capacity`).
    public func start(ofPart number: Int) -> Int64 {
        let tier = (number - 1) / Self.partsPerTier
        let tierStart = Int64(Self.partsPerTier) * basePartSize * ((1 << Int64(tier)) - 1)
        return tierStart + Int64((number - 1) % Self.partsPerTier) * (basePartSize << Int64(tier))
    }

    /// The part that holds byte `offset`; an offset at a part's first byte is in that part. Past `capacity`:
    /// a number above `maxParts`.
    public func part(containing offset: Int64) -> Int {
        var tier = 0
        var tierStart: Int64 = 0
        while true {
            let tierBytes = Int64(Self.partsPerTier) * (basePartSize << Int64(tier))
            if offset < tierStart + tierBytes || tier >= Self.maxParts / Self.partsPerTier {
                return tier * Self.partsPerTier + 1 + Int((offset - tierStart) / (basePartSize << Int64(tier)))
            }
            tierStart += tierBytes
            tier += 1
        }
    }

    /// The most bytes a blob can hold: the start of the part after the last.
    public var capacity: Int64 { start(ofPart: Self.maxParts + 1) }
}
