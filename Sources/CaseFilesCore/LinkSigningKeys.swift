/// The HMAC-SHA256 keys that sign download links: the current one signs, and links signed with the
/// previous one stay valid until they expire, so a rotation breaks no link handed out before it.
public struct LinkSigningKeys: Sendable, Equatable {
    public static let byteCount = 32
    public var current: [UInt8]
    public var previous: [UInt8]?

    public init(current: [UInt8], previous: [UInt8]? = nil) {
        self.current = current
        self.previous = previous
    }

    /// Newest first: the order a signature is tried in.
    public var all: [[UInt8]] { [current] + (previous.map { [$0] } ?? []) }
}
