import Foundation

/// A content coding an upload request body may carry (`Content-Encoding`, RFC 9110 §8.4): our tus
/// extension `casefiles-content-encoding`. Each request body is ONE complete stream of the coding; the
/// server inflates it as it arrives and stores the decoded bytes, so offsets and lengths count decoded bytes.
public enum ContentCoding: String, Sendable, Equatable, CaseIterable {
    /// RFC 1952 gzip, one member (RFC 9110 §8.4.1.3).
    case gzip
    /// The zlib format, RFC 1950 (RFC 9110 §8.4.1.2: "deflate" means a zlib stream). Raw deflate (RFC 1951
    /// without the zlib wrapper), which some old clients sent, is refused: its first bytes are not a zlib header.
    case deflate

    /// The tus extension name in `Tus-Extension` (ours: tus 1.0 defines no content coding).
    public static let tusExtension = "casefiles-content-encoding"

    /// The codings accepted, as a `Content-Encoding` list would name them ("gzip, deflate").
    public static let supportedList = allCases.map(\.rawValue).joined(separator: ", ")

    /// Why a `Content-Encoding` value is not accepted.
    public enum Problem: Error, Sendable, Equatable {
        /// A coding other than gzip, deflate or identity, or more than one coding (`gzip, gzip`).
        case unsupported(String)
    }

    /// Parses a `Content-Encoding` field value (codings are case-insensitive, RFC 9110 §8.4.1).
    /// - Returns: nil for no coding (absent, empty, or `identity`); `.failure` for any other value.
    public static func parse(_ value: String?) -> Result<ContentCoding?, Problem> {
        guard let value else { return .success(nil) }
        let codings = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .filter { !$0.isEmpty && $0 != "identity" }
        switch codings.count {
        case 0: return .success(nil)
        case 1:
            // RFC 9110 §8.4.1.3: a recipient should treat x-gzip as gzip.
            let name = codings[0] == "x-gzip" ? "gzip" : codings[0]
            if let coding = ContentCoding(rawValue: name) { return .success(coding) }
            return .failure(.unsupported(String(value.prefix(64))))
        default:
            return .failure(.unsupported(String(value.prefix(64))))
        }
    }

    /// zlib's `windowBits` for `inflateInit2`/`deflateInit2`: 15 (a 32 KiB window), plus 16 for the gzip wrapper.
    public var zlibWindowBits: Int32 {
        switch self {
        case .gzip: 15 + 16
        case .deflate: 15
        }
    }
}
