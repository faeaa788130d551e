import Foundation
import NIOCore

/// Where upload bytes live. Knows nothing of HTTP, tus or the database: the protocol handler
/// validates offsets and holds the upload's writer lock before calling in, and the database is
/// the authority on how many bytes of a blob are committed (bytes past that are garbage).
public protocol BlobStore: Sendable {
    /// Creates an empty blob; the id is server-generated, never a client-supplied name.
    func create(id: String) throws

    /// Opens a blob for appending at `offset`, the committed length. Anything on disk past it
    /// (bytes of a request that was cut off before its commit) is discarded first.
    func openForAppend(id: String, at offset: Int64) throws -> BlobAppender

    /// Opens a committed blob for reading.
    func openForReading(id: String) throws -> BlobReader

    /// Removes a blob; a missing blob is not an error.
    func remove(id: String) throws

    /// Every blob id on disk, for sweeping orphans.
    func storedIDs() throws -> [String]

    /// When a blob was last written (real time, for the orphan sweep's age threshold).
    func lastModified(id: String) -> Date?

    /// Bytes available to the service on the storage filesystem.
    func availableBytes() throws -> Int64
}

public enum StorageError: Error, Equatable {
    case noSpace
    case missingBlob(String)
    case io(operation: String, errno: Int32)

    static func from(_ operation: String, errno code: Int32) -> StorageError {
        code == ENOSPC || code == EDQUOT ? .noSpace : .io(operation: operation, errno: code)
    }
}
