import Foundation
import RawStructuredFieldValues

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

    /// One member of an RFC 9530 digest field (`Repr-Digest`, `Content-Digest`): the algorithm's registry key
    /// (`sha-256`) and its value's bytes; nil when the value is not a byte sequence (`:<base64>:`).
    public struct DigestMember: Sendable, Equatable {
        public var algorithm: String
        public var bytes: [UInt8]?
    }

    /// The members of an RFC 9530 digest field, in order: an RFC 8941 dictionary (§3.2) of algorithm → byte
    /// sequence. Nil when the text is not a structured-field dictionary. Parameters are ignored (RFC 9530 §2).
    public static func parseDigestField(_ text: String) -> [DigestMember]? {
        var parser = StructuredFieldValueParser(Array(text.utf8))
        guard let dictionary = try? parser.parseDictionaryFieldValue() else { return nil }
        return dictionary.map { key, value in
            guard case .item(let item) = value, case .undecodedByteSequence(let base64) = item.rfc9651BareItem,
                  let bytes = Data(base64Encoded: base64)
            else { return DigestMember(algorithm: key, bytes: nil) }
            return DigestMember(algorithm: key, bytes: Array(bytes))
        }
    }

    /// The preferences of RFC 9530 §4 `Want-Repr-Digest` / `Want-Content-Digest`: algorithm → 0...10, where 0
    /// means "not acceptable". Nil when the text is not a dictionary of integers in that range.
    public static func parseWantDigest(_ text: String) -> [String: Int]? {
        var parser = StructuredFieldValueParser(Array(text.utf8))
        guard let dictionary = try? parser.parseDictionaryFieldValue() else { return nil }
        var preferences: [String: Int] = [:]
        for (key, value) in dictionary {
            guard case .item(let item) = value, case .integer(let weight) = item.rfc9651BareItem, (0...10).contains(weight)
            else { return nil }
            preferences[key] = Int(weight)
        }
        return preferences
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
        guard let members = parseDigestField(text) else { return .failure(.notADictionary) }
        guard let member = members.first(where: { $0.algorithm == "sha-256" }) else { return .failure(.noSHA256) }
        guard let bytes = member.bytes, bytes.count == SHA256Digest.byteCount else { return .failure(.malformedSHA256) }
        return .success(bytes.hexString)
    }

    /// An RFC 9530 digest field of one SHA-256: `sha-256=:<base64>:`, from the digest's lowercase hex.
    public static func sha256DigestField(hex: String) -> String? {
        [UInt8](hex: hex, byteCount: SHA256Digest.byteCount).map { "sha-256=:\(Data($0).base64EncodedString()):" }
    }
}
