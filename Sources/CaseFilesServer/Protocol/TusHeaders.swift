import Foundation
import HTTPTypes
import CaseFilesCore


extension HTTPField.Name {
    static let tusResumable = Self("Tus-Resumable")!
    static let tusVersion = Self("Tus-Version")!
    static let tusExtension = Self("Tus-Extension")!
    static let tusMaxSize = Self("Tus-Max-Size")!
    static let tusChecksumAlgorithm = Self("Tus-Checksum-Algorithm")!
    static let uploadOffset = Self("Upload-Offset")!
    static let uploadLength = Self("Upload-Length")!
    static let uploadDeferLength = Self("Upload-Defer-Length")!
    static let uploadMetadata = Self("Upload-Metadata")!
    static let uploadChecksum = Self("Upload-Checksum")!
    static let uploadExpires = Self("Upload-Expires")!
    static let reprDigest = Self("Repr-Digest")!
    static let methodOverride = Self("X-HTTP-Method-Override")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
}

/// Parsers for the tus request headers. Each returns nil when the header is absent and throws an
/// `APIError` naming the header when it is present but malformed: bad input never reaches storage.
public enum TusHeaders {
    /// The single value of a header; a repeated header is ambiguous and refused.
    static func single(_ name: HTTPField.Name, in fields: HTTPFields) throws -> String? {
        let values = fields[values: name]
        guard values.count <= 1 else { throw APIError.invalidHeader(name, "sent more than once") }
        return values.first
    }

    static func count(_ name: HTTPField.Name, in fields: HTTPFields) throws -> Int64? {
        guard let text = try single(name, in: fields) else { return nil }
        guard let value = WireFormat.parseCount(text) else {
            throw APIError.invalidHeader(name, "must be a non-negative decimal integer below 2^63 without leading zeros")
        }
        return value
    }

    static func offset(in fields: HTTPFields) throws -> Int64 {
        guard let offset = try count(.uploadOffset, in: fields) else {
            throw APIError.invalidHeader(.uploadOffset, "is required; send the offset that HEAD returned")
        }
        return offset
    }

    /// `Upload-Checksum: <algorithm> <base64 digest>` (tus checksum extension).
    public static func parseChecksum(_ text: String) throws -> (ChecksumAlgorithm, [UInt8]) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw APIError.invalidHeader(.uploadChecksum, "must be `<algorithm> <base64 digest>`")
        }
        guard let algorithm = ChecksumAlgorithm(rawValue: String(parts[0])),
              ChecksumAlgorithm.tusChecksum.contains(algorithm)
        else {
            throw APIError.badRequest(
                "unsupported_checksum_algorithm",
                "Upload-Checksum algorithm \(parts[0].prefix(32)) is not supported; use sha1 or sha256.")
        }
        guard let digest = Data(base64Encoded: String(parts[1])), digest.count == algorithm.digestLength else {
            throw APIError.invalidHeader(
                .uploadChecksum, "the digest must be the base64 of \(algorithm.digestLength) bytes")
        }
        return (algorithm, Array(digest))
    }

    static func checksum(in fields: HTTPFields) throws -> (ChecksumAlgorithm, [UInt8])? {
        try single(.uploadChecksum, in: fields).map(parseChecksum)
    }

    /// The SHA-256 from RFC 9530 `Repr-Digest: sha-256=:<base64>:` as hex. Other algorithms may come
    /// along, but a header without sha-256 is refused: a digest the server cannot check must not look checked.
    public static func parseReprDigest(_ text: String) throws -> String {
        switch WireFormat.parseReprDigest(text) {
        case .success(let hex): return hex
        case .failure(.notADictionary):
            throw APIError.invalidHeader(.reprDigest, "must be a dictionary like `sha-256=:<base64>:`")
        case .failure(.malformedSHA256):
            throw APIError.invalidHeader(.reprDigest, "sha-256 must be `:<base64 of 32 bytes>:`")
        case .failure(.noSHA256):
            throw APIError.badRequest("unsupported_digest_algorithm",
                                      "Repr-Digest has no sha-256 member, and SHA-256 is the only digest this server verifies: "
                                      + "send `Repr-Digest: sha-256=:<base64>:` or leave the header out.")
        }
    }

    /// The body's content coding (`casefiles-content-encoding`): nil without one.
    /// - Throws: 415 `unsupported_content_encoding` for any coding but gzip, deflate and identity.
    static func contentCoding(in fields: HTTPFields) throws -> ContentCoding? {
        let values = fields[values: .contentEncoding]
        // Several fields are one list (RFC 9110 §5.3): `gzip` twice is two codings, which is refused.
        switch ContentCoding.parse(values.isEmpty ? nil : values.joined(separator: ",")) {
        case .success(let coding): return coding
        case .failure(.unsupported(let value)): throw APIError.unsupportedContentEncoding(value)
        }
    }

    static func reprDigest(in fields: HTTPFields) throws -> String? {
        try single(.reprDigest, in: fields).map(parseReprDigest)
    }
}

/// `Upload-Metadata` (tus creation extension): comma-separated `key base64(value)` pairs.
public struct UploadMetadata: Sendable, Equatable {
    public var raw: String
    public var values: [String: Data]

    public init(parsing raw: String) throws {
        guard raw.utf8.count <= TusProtocol.maxMetadataBytes else {
            throw Self.invalid("is longer than \(TusProtocol.maxMetadataBytes) bytes")
        }
        self.raw = raw
        self.values = [:]
        if raw.allSatisfy({ $0 == " " }) { return }  // an empty header is legal (tuspy sends one)
        for pair in raw.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), !parts[0].isEmpty else {
                throw Self.invalid("each entry must be `key base64value`")
            }
            let key = String(parts[0])
            guard values[key] == nil else { throw Self.invalid("key \(key.prefix(64)) appears twice") }
            if parts.count == 1 || parts[1].isEmpty {
                values[key] = Data()
            } else {
                guard let value = Data(base64Encoded: String(parts[1])) else {
                    throw Self.invalid("the value of \(key.prefix(64)) is not valid base64")
                }
                values[key] = value
            }
        }
    }

    public func string(_ key: String) throws -> String? {
        guard let data = values[key] else { return nil }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw Self.invalid("the value of \(key) is not valid UTF-8")
        }
        return text
    }

    static func invalid(_ problem: String) -> APIError {
        APIError.badRequest("invalid_metadata", "Upload-Metadata \(problem).")
    }

    /// The `filename` entry, which every upload needs and which is only ever displayed, never used as a path.
    public func filename() throws -> String {
        guard let name = try string("filename"), !name.isEmpty else {
            throw APIError.badRequest("missing_filename", "Upload-Metadata must include a non-empty `filename`.")
        }
        if let problem = Self.filenameProblem(name) {
            throw APIError.badRequest("invalid_filename", "The filename \(problem). Rename the file and retry.")
        }
        return name
    }

    public static func filenameProblem(_ name: String) -> String? {
        if name.utf8.count > TusProtocol.maxFilenameBytes {
            return "is longer than \(TusProtocol.maxFilenameBytes) bytes"
        }
        if name == "." || name == ".." { return "may not be . or .." }
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0x2F, 0x5C: return "may not contain / or \\"
            case 0x00...0x1F, 0x7F...0x9F: return "may not contain control characters"
            case 0x200E, 0x200F, 0x061C, 0x202A...0x202E, 0x2066...0x2069:
                return "may not contain bidirectional override characters"
            default: continue
            }
        }
        return nil
    }

    /// The optional whole-file `sha256` entry: 64 hex characters, returned lowercased.
    public func sha256() throws -> String? {
        guard let text = try string("sha256") else { return nil }
        guard let bytes = [UInt8](hex: text, byteCount: SHA256Digest.byteCount) else {
            throw Self.invalid("sha256 must be 64 hexadecimal characters")
        }
        return bytes.hexString
    }
}
