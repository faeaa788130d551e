import CaseFilesCore
/// A single byte range from a `Range` header (RFC 9110 §14.1.2), resolved against a representation size.
public struct ByteRange: Equatable, Sendable {
    public var first: Int64
    public var last: Int64
    public var count: Int64 { last - first + 1 }

    public enum Resolution: Equatable, Sendable {
        /// No usable range: serve the whole representation (absent, malformed, or several ranges,
        /// which RFC 9110 lets a server ignore).
        case whole
        case partial(ByteRange)
        /// 416 with `Content-Range: bytes */size`.
        case unsatisfiable
    }

    public static func resolve(_ header: String?, size: Int64) -> Resolution {
        guard let header else { return .whole }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = trimmed.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let start = String(spec[..<dash]).trimmingCharacters(in: .whitespaces)
        let end = String(spec[spec.index(after: dash)...]).trimmingCharacters(in: .whitespaces)

        if start.isEmpty {
            // Suffix range: the last N bytes.
            guard let suffix = WireFormat.parseCount(end) ?? Self.lenientCount(end) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            return .partial(ByteRange(first: max(0, size - suffix), last: size - 1))
        }
        guard let first = Self.lenientCount(start) else { return .whole }
        let last: Int64
        if end.isEmpty {
            last = size - 1
        } else {
            guard let value = Self.lenientCount(end), value >= first else { return .whole }
            last = min(value, size - 1)
        }
        guard first < size else { return .unsatisfiable }
        return .partial(ByteRange(first: first, last: last))
    }

    /// Digits only (leading zeros allowed in ranges); values beyond Int64 saturate.
    private static func lenientCount(_ text: String) -> Int64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return Int64(text) ?? Int64.max
    }
}
