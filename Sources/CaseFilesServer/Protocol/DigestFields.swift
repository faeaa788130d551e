import Foundation
import HTTPTypes
import CaseFilesCore

extension HTTPField.Name {
    static let contentDigest = Self("Content-Digest")!
    static let wantReprDigest = Self("Want-Repr-Digest")!
    static let wantContentDigest = Self("Want-Content-Digest")!
}

/// RFC 9530 digest fields on the wire: the request's own `Content-Digest` (checked like tus `Upload-Checksum`,
/// through the same chunk-digest lane of `ChunkSink`) and the `Want-*-Digest` preferences a response honours.
/// The whole-file `Repr-Digest` a client declares is `TusHeaders.reprDigest`.
enum DigestFields {
    /// RFC 9530 §2 `Content-Digest` of a request: the digest of its content as sent (no content coding is
    /// accepted on uploads, so the bytes appended). Of several supported members the strongest is checked
    /// (RFC 9530 §2 lets a recipient check any); members of other algorithms are skipped, but a field naming
    /// no supported one is refused (400 `unsupported_digest_algorithm`), never silently left unchecked.
    /// Sent twice: 400, as `Repr-Digest` (`TusHeaders.single`).
    /// - Returns: the algorithm and the expected digest bytes; nil without the field.
    static func parseContentDigest(_ text: String) throws -> (ChecksumAlgorithm, [UInt8]) {
        guard let members = WireFormat.parseDigestField(text) else {
            throw APIError.invalidHeader(.contentDigest, "must be a dictionary like `sha-256=:<base64>:` (RFC 9530)")
        }
        for algorithm in ChecksumAlgorithm.contentDigest {
            guard let member = members.first(where: { $0.algorithm == algorithm.digestFieldKey }) else { continue }
            guard let bytes = member.bytes, bytes.count == algorithm.digestLength else {
                throw APIError.invalidHeader(
                    .contentDigest, "\(member.algorithm) must be `:<base64 of \(algorithm.digestLength) bytes>:`")
            }
            return (algorithm, bytes)
        }
        throw APIError.unsupportedContentDigest(named: members.map(\.algorithm))
    }

    /// The one digest of its own content a request asks the server to check: `Upload-Checksum` (tus) or
    /// `Content-Digest` (RFC 9530). Both on one request is refused (400 `two_content_checksums`): one
    /// per-request digest keeps the upload path at two hash passes (this one and the whole file's SHA-256).
    static func requestDigest(in fields: HTTPFields) throws -> (ChecksumAlgorithm, [UInt8])? {
        let checksum = try TusHeaders.checksum(in: fields)
        let contentDigest = try TusHeaders.single(.contentDigest, in: fields).map(parseContentDigest)
        if checksum != nil && contentDigest != nil { throw APIError.twoContentChecksums() }
        return checksum ?? contentDigest
    }

    /// Whether a `Want-Repr-Digest` / `Want-Content-Digest` field asks for a digest we send (SHA-256): present
    /// and not ruling sha-256 out with weight 0 (RFC 9530 §4). The field is a hint: a malformed one still
    /// counts as asking, since the server may always send a digest.
    static func wants(_ name: HTTPField.Name, in fields: HTTPFields) -> Bool {
        guard let text = fields[name] else { return false }
        return WireFormat.parseWantDigest(text)?["sha-256"] != 0
    }

    /// The verified whole-file `Repr-Digest` (RFC 9530 §3) the response completing an upload carries, whether
    /// or not `Want-Repr-Digest` asked (it names the SHA-256 the server computed); nil until verified.
    static func verifiedReprDigest(of upload: Upload) -> String? {
        guard upload.state == .verified, let sha256 = upload.sha256 else { return nil }
        return WireFormat.sha256DigestField(hex: sha256)
    }
}
