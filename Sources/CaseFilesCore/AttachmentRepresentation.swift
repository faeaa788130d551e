import Foundation

/// The JSON shape of an attachment (`GET /api/v1/attachments/{id}`, and in a case's list), the one the server
/// encodes and the client decodes. Dates are ISO 8601.
public struct AttachmentRepresentation: Codable, Sendable, Equatable {
    /// The upload's id (32 hex digits).
    public var id: String
    public var filename: String
    /// Bytes.
    public var size: Int64
    /// Lowercase hex, once verified.
    public var sha256: String?
    /// `verified`, or `purged` for a tombstone.
    public var state: String
    /// The uploader's user name.
    public var uploadedBy: String
    public var uploadedAt: Date
    public var purgedAt: Date?

    public init(_ upload: Upload, uploadedBy: String?) {
        id = upload.id
        filename = upload.filename
        size = upload.offset
        sha256 = upload.sha256
        state = upload.state.rawValue
        self.uploadedBy = uploadedBy ?? "unknown"
        uploadedAt = upload.completedAt ?? upload.updatedAt
        purgedAt = upload.purgedAt
    }
}

/// Where a case's listing (`GET /api/v1/cases/{n}/attachments`) stands: its order is creation time, then id, and a
/// page's cursor is its last upload's place in it, `MILLISECONDS-ID` (creation time in milliseconds since 1970,
/// as the database keeps it, and the upload's id). Any well-formed cursor is a place in the order, so one whose
/// upload has since gone still says where to go on.
public struct ListingPosition: Sendable, Equatable {
    public var createdAtMilliseconds: Int64
    public var id: String

    public init(_ upload: Upload) {
        createdAtMilliseconds = Int64((upload.createdAt.timeIntervalSince1970 * 1000).rounded())
        id = upload.id
    }

    /// Parses `MILLISECONDS-ID`; nil for anything else.
    public init?(cursor: String) {
        let parts = cursor.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...15).contains(parts[0].count), parts[0].allSatisfy({ $0.isASCII && $0.isNumber }),
              let milliseconds = Int64(parts[0]), milliseconds >= 0, SecureRandom.isIdentifier(String(parts[1]))
        else { return nil }
        createdAtMilliseconds = milliseconds
        id = String(parts[1])
    }

    public var cursor: String { "\(createdAtMilliseconds)-\(id)" }
}

/// `GET /api/v1/cases/{n}/attachments`: one page of the verified attachments (and tombstones) and the unfinished
/// uploads, oldest first.
public struct AttachmentListRepresentation: Codable, Sendable, Equatable {
    public struct Unfinished: Codable, Sendable, Equatable {
        public var id: String
        public var filename: String
        /// Bytes received so far.
        public var offset: Int64
        /// nil while the length is deferred.
        public var length: Int64?

        public init(_ upload: Upload) {
            id = upload.id
            filename = upload.filename
            offset = upload.offset
            length = upload.length
        }
    }

    public var attachments: [AttachmentRepresentation]
    public var uploads: [Unfinished]
    /// The `after` cursor of the next page (`ListingPosition`); absent on the last page.
    public var next: String?

    public init(attachments: [AttachmentRepresentation], uploads: [Unfinished], next: String? = nil) {
        self.attachments = attachments
        self.uploads = uploads
        self.next = next
    }
}
