import Foundation
import HTTPTypes
import StructuredFieldValues
import CaseFilesCore

extension HTTPField.Name {
    static let uploadComplete = Self("Upload-Complete")!
    /// Draft -01 (interop 3): the inverse of `Upload-Complete`.
    static let uploadIncomplete = Self("Upload-Incomplete")!
    static let uploadLimit = Self("Upload-Limit")!
    static let uploadDraftInteropVersion = Self("Upload-Draft-Interop-Version")!
    static let acceptPatch = Self("Accept-Patch")!
}

/// Which iteration of draft-ietf-httpbis-resumable-upload a request speaks (its "Draft Version
/// Identification" section: the interop version is bumped for breaking changes).
///
/// - 3: draft -01, which Apple's URLSession (iOS 17 / macOS 14) speaks: `Upload-Incomplete` (inverted), no
///   `application/partial-upload`, no `Upload-Limit`, no problem types (swift-nio-extras' `NIOResumableUpload`).
/// - 8 and 9: the current text (-09 to -15): `Upload-Complete`, `Upload-Length`, `Upload-Limit`,
///   `application/partial-upload`, RFC 9457 problem types. The newest text read states 8; the July 2026 change
///   before -12 set 9; the wire format is the same for both as far as any text read says.
struct InteropVersion: Sendable, Equatable, Comparable {
    let number: Int

    static let draft01 = InteropVersion(number: 3)
    static let newest = InteropVersion(number: 9)
    static let supported: [Int] = [3, 8, 9]

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.number < rhs.number }

    /// Draft -01 says `Upload-Incomplete: ?1` where later drafts say `Upload-Complete: ?0`.
    var usesUploadIncomplete: Bool { self == .draft01 }
    /// `application/partial-upload` on appends, `Upload-Limit`, problem types: from draft -03 on (interop 5-6).
    var isCurrent: Bool { number >= 8 }
}

/// What an IETF resumable-upload request says in its fields, parsed as Structured Fields (RFC 9651) with
/// apple/swift-http-structured-headers. A field that is present but not of its type is refused (400
/// `invalid_header`) rather than ignored as the draft allows: a client sending garbage learns it at once.
struct IETFRequestFields: Sendable {
    /// The version the client speaks; for a request without `Upload-Draft-Interop-Version` (a client of the
    /// final RFC) the newest, or draft -01's if it sends `Upload-Incomplete`.
    var version: InteropVersion
    /// The client sent `Upload-Draft-Interop-Version`: only then may a 104 be sent (draft, "Draft Version
    /// Identification": never for a missing or mismatching interop version).
    var announced: Bool
    /// `Upload-Complete` (or the inverse of `Upload-Incomplete`); nil when absent.
    var complete: Bool?
    var offset: Int64?
    var length: Int64?

    /// Whether the request speaks the IETF protocol at all: the dispatch rule between it and tus.
    static func isIETF(_ fields: HTTPFields) -> Bool {
        fields[.uploadComplete] != nil || fields[.uploadIncomplete] != nil || fields[.uploadDraftInteropVersion] != nil
    }

    /// - Throws: `APIError` 400 `unsupported_interop_version` for a version this server does not speak,
    ///   `invalid_header` for a field that is not its Structured Field type.
    init(_ fields: HTTPFields) throws {
        if let text = try TusHeaders.single(.uploadDraftInteropVersion, in: fields) {
            guard let number = Int(text.trimmingCharacters(in: .whitespaces)), InteropVersion.supported.contains(number) else {
                throw APIError.badRequest(
                    "unsupported_interop_version",
                    "Upload-Draft-Interop-Version \(text.prefix(16)) is not supported; this server speaks interop versions "
                    + InteropVersion.supported.map(String.init).joined(separator: ", ") + ".")
            }
            version = InteropVersion(number: number)
            announced = true
        } else {
            version = fields[.uploadIncomplete] != nil ? .draft01 : .newest
            announced = false
        }
        if version.usesUploadIncomplete {
            complete = try Self.boolean(.uploadIncomplete, in: fields).map { !$0 }
        } else {
            complete = try Self.boolean(.uploadComplete, in: fields)
        }
        offset = try Self.integer(.uploadOffset, in: fields)
        length = try Self.integer(.uploadLength, in: fields)
    }

    private struct BooleanItem: StructuredFieldValue {
        static let structuredFieldType = StructuredFieldType.item
        var item: Bool
    }

    private struct IntegerItem: StructuredFieldValue {
        static let structuredFieldType = StructuredFieldType.item
        var item: Int64
    }

    /// An Item Boolean field (`?1`, `?0`).
    static func boolean(_ name: HTTPField.Name, in fields: HTTPFields) throws -> Bool? {
        guard let text = try TusHeaders.single(name, in: fields) else { return nil }
        guard let value = try? StructuredFieldValueDecoder().decode(BooleanItem.self, from: Array(text.utf8)) else {
            throw APIError.invalidHeader(name, "must be a Structured Field Boolean, ?1 or ?0")
        }
        return value.item
    }

    /// An Item Integer field that must be non-negative (`Upload-Offset`, `Upload-Length`).
    static func integer(_ name: HTTPField.Name, in fields: HTTPFields) throws -> Int64? {
        guard let text = try TusHeaders.single(name, in: fields) else { return nil }
        guard let value = try? StructuredFieldValueDecoder().decode(IntegerItem.self, from: Array(text.utf8)),
              value.item >= 0
        else {
            throw APIError.invalidHeader(name, "must be a non-negative Structured Field Integer")
        }
        return value.item
    }

    /// `?1` / `?0` as sent on responses.
    static func serialize(_ value: Bool) -> String { value ? "?1" : "?0" }
}

/// `Upload-Limit` (draft, "Limits"): a Dictionary of integers. `max-size` is `--max-upload-size`; `max-age` the
/// seconds the upload resource has left (`--upload-expiry` from its last progress). No append-size limits: an
/// append may be as large as the upload, and any size down to zero bytes is accepted.
struct UploadLimit: StructuredFieldValue, Equatable {
    static let structuredFieldType = StructuredFieldType.dictionary
    var maxSize: Int64?
    var maxAge: Int64?

    enum CodingKeys: String, CodingKey {
        case maxSize = "max-size"
        case maxAge = "max-age"
    }

    var serialized: String {
        String(decoding: (try? StructuredFieldValueEncoder().encode(self)) ?? [], as: UTF8.self)
    }
}

extension ContentDisposition {
    /// The file name a request names in `Content-Disposition` (RFC 6266 §4.3): `filename*` (RFC 8187:
    /// `UTF-8''percent-encoded`) is preferred over `filename` (a token or quoted-string); nil when neither is there.
    static func filename(_ value: String) -> String? {
        var plain: String?
        var extended: String?
        for parameter in parameters(value) {
            switch parameter.name {
            case "filename*": extended = decodeExtended(parameter.value)
            case "filename": plain = parameter.value
            default: continue
            }
        }
        return extended ?? plain
    }

    /// `type; name=value; name="quoted; value"`: the parameters after the disposition type, names lowercased.
    private static func parameters(_ value: String) -> [(name: String, value: String)] {
        var result: [(String, String)] = []
        var scalars = Substring(value)
        // Skip the disposition type.
        guard let semicolon = scalars.firstIndex(of: ";") else { return [] }
        scalars = scalars[scalars.index(after: semicolon)...]
        while !scalars.isEmpty {
            scalars = scalars.drop { $0 == " " || $0 == "\t" }
            guard let equals = scalars.firstIndex(of: "=") else { break }
            let name = scalars[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            scalars = scalars[scalars.index(after: equals)...].drop { $0 == " " }
            var text = ""
            if scalars.first == "\"" {
                scalars = scalars.dropFirst()
                var escaped = false
                while let character = scalars.first {
                    scalars = scalars.dropFirst()
                    if escaped { text.append(character); escaped = false; continue }
                    if character == "\\" { escaped = true; continue }
                    if character == "\"" { break }
                    text.append(character)
                }
                scalars = scalars.drop { $0 != ";" }
            } else {
                let end = scalars.firstIndex(of: ";") ?? scalars.endIndex
                text = scalars[..<end].trimmingCharacters(in: .whitespaces)
                scalars = scalars[end...]
            }
            scalars = scalars.drop { $0 == ";" }
            result.append((name, text))
        }
        return result
    }

    /// RFC 8187 §3.2: `charset'language'value-chars`, UTF-8 only (ISO-8859-1 is rare and refused by omission).
    private static func decodeExtended(_ value: String) -> String? {
        let parts = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].lowercased() == "utf-8" else { return nil }
        return String(parts[2]).removingPercentEncoding
    }
}
