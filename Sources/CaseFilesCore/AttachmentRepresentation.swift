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

/// `GET /api/v1/cases/{n}/attachments`: the verified attachments (and tombstones) and the unfinished uploads.
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

    public init(attachments: [AttachmentRepresentation], uploads: [Unfinished]) {
        self.attachments = attachments
        self.uploads = uploads
    }
}
