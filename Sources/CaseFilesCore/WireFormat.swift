import Foundation

/// tus 1.0 constants both ends share.
public enum TusProtocol {
    public static let version = "1.0.0"
    public static let contentType = "application/offset+octet-stream"
    /// The longest `Upload-Metadata` accepted, in bytes (of the header value).
    public static let maxMetadataBytes = 4096
    /// The longest file name accepted, in UTF-8 bytes (a common file-system limit).
    public static let maxFilenameBytes = 255
}

/// The header values the server and the client both parse, without an HTTP library: the server turns a
/// problem into an HTTP error naming the header (`TusHeaders`), the client reads the server's answers.
public enum WireFormat {
    /// A non-negative decimal integer that fits in 64 bits, without sign, spaces or leading zeros
    /// (tus 1.0 `Upload-Offset`, `Upload-Length`; RFC 9110 `Content-Length`).
    public static func parseCount(_ text: String) -> Int64? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 19, utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        guard utf8.first != UInt8(ascii: "0") || utf8.count == 1 else { return nil }
        return Int64(text)
    }

    public enum ReprDigestProblem: Error, Equatable {
        /// Not a dictionary of `algorithm=:base64:` members.
        case notADictionary
        /// A `sha-256` member that is not the base64 of 32 bytes between colons.
        case malformedSHA256
        /// No `sha-256` member: the only digest CaseFiles checks.
        case noSHA256
    }

    /// The SHA-256 from RFC 9530 `Repr-Digest: sha-256=:<base64>:`, as lowercase hex. Other algorithms may
    /// come along and are skipped.
    public static func parseReprDigest(_ text: String) -> Result<String, ReprDigestProblem> {
        for member in text.split(separator: ",") {
            let trimmed = member.trimmingCharacters(in: .whitespaces)
            guard let equals = trimmed.firstIndex(of: "=") else { return .failure(.notADictionary) }
            guard trimmed[..<equals] == "sha-256" else { continue }
            let value = trimmed[trimmed.index(after: equals)...]
            guard value.count >= 2, value.first == ":", value.last == ":",
                  let bytes = Data(base64Encoded: String(value.dropFirst().dropLast())),
                  bytes.count == SHA256Digest.byteCount
            else { return .failure(.malformedSHA256) }
            return .success(Array(bytes).hexString)
        }
        return .failure(.noSHA256)
    }
}
