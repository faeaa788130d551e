import Foundation

/// How much a user and a case hold now, read in one query (`MetadataStore.uploadUsage`): what the creation
/// quotas are checked against.
public struct UploadUsage: Sendable, Equatable {
    /// Unfinished (`uploading`) uploads the user created, in any case.
    public var unfinishedByUser: Int
    /// Unfinished uploads in the case, by anyone.
    public var unfinishedInCase: Int
    /// Bytes the case holds or has been promised, in bytes: each unfinished upload's declared length (its
    /// offset while the length is deferred) plus each verified attachment's length.
    public var caseBytes: Int64

    public init(unfinishedByUser: Int, unfinishedInCase: Int, caseBytes: Int64) {
        self.unfinishedByUser = unfinishedByUser
        self.unfinishedInCase = unfinishedInCase
        self.caseBytes = caseBytes
    }
}

/// Refusals of the comment cap and of appends by anyone but an upload's creator. (The upload quotas are the
/// upload engine's `UploadError`s.)
extension CaseFilesError {
    public static func commentTooLong(limit: Int) -> CaseFilesError {
        CaseFilesError(.invalid, "comment_too_long",
                       "A comment may be at most \(limit) bytes of UTF-8 (limit: comment size). Shorten it, and "
                       + "attach longer text as a file.")
    }

    /// Only the user who created an upload sends its bytes: whoever else is allowed may terminate it.
    public static func notUploadCreator(_ id: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "not_upload_creator",
                       "Only the user who created upload \(id) may send its bytes. Create an upload of your own, "
                       + "or ask its creator to finish it.")
    }
}

/// One append as recorded with its offset, in the same transaction: who sent bytes [from, to) of an upload.
public struct AppendRecord: Codable, Sendable, Equatable {
    public var uploadID: String
    public var fromOffset: Int64
    public var toOffset: Int64
    /// The user who sent the bytes.
    public var userID: Int64
    public var at: Date

    public init(uploadID: String, fromOffset: Int64, toOffset: Int64, userID: Int64, at: Date) {
        self.uploadID = uploadID
        self.fromOffset = fromOffset
        self.toOffset = toOffset
        self.userID = userID
        self.at = at
    }
}
