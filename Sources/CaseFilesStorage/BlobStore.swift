import Foundation
import NIOCore
import NIOPosix
import CaseFilesCore

/// Where upload bytes live. Knows nothing of HTTP, tus or the database: the upload engine validates
/// offsets and holds the upload's writer lock (`UploadWriter`) before calling in, and the metadata store
/// is the authority on how many bytes of a blob are committed (bytes past that are garbage).
public protocol BlobStore: Sendable {
    /// The threads the async calls below run on.
    var threads: StorageThreads { get }

    /// Creates an empty blob; the id is server-generated, never a client-supplied name.
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    func create(id: String) throws

    /// Opens a blob for appending at `offset`, the committed length. Anything on disk past it
    /// (bytes of a request that was cut off before its commit) is discarded first.
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    func openForAppend(id: String, at offset: Int64) throws -> BlobAppender

    /// Opens a committed blob for reading.
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    func openForReading(id: String) throws -> BlobReader

    /// Removes a blob; a missing blob is not an error.
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    func remove(id: String) throws

    /// Every blob id on disk, for sweeping orphans.
    func storedIDs() throws -> [String]

    /// When a blob was last written (real time, for the orphan sweep's age threshold).
    func lastModified(id: String) -> Date?

    /// Bytes available to the service on the storage filesystem.
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    func availableBytes() throws -> Int64
}

/// The calls that can wait on the disk, for async callers: the same calls on the store's blocking pool, off
/// the threads that run handlers (the event loops in `serve`). An fsync waits for the journal, and freeing
/// a large file's extents (unlink, ftruncate) took 1.2 s for 4 GiB here. Being overloads, they are what an
/// `async` caller gets: calling the blocking version from async code does not compile.
extension BlobStore {
    public func create(id: String) async throws {
        try await threads.blockingIO { try self.create(id: id) }
    }

    public func openForAppend(id: String, at offset: Int64) async throws -> BlobAppender {
        try await threads.blockingIO { try self.openForAppend(id: id, at: offset) }
    }

    public func remove(id: String) async throws {
        try await threads.blockingIO { try self.remove(id: id) }
    }

    /// `open` can wait on a cold directory lookup.
    public func openForReading(id: String) async throws -> BlobReader {
        try await threads.blockingIO { try self.openForReading(id: id) }
    }

    /// `statvfs` can wait on a busy filesystem.
    public func availableBytes() async throws -> Int64 {
        try await threads.blockingIO { try self.availableBytes() }
    }
}

extension NIOThreadPool {
    /// Unlike `runIfActive`, not cancelled with the calling task.
    package func runToCompletion<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { state in
                guard case .active = state else {
                    continuation.resume(throwing: NIOThreadPoolError.ThreadPoolInactive())
                    return
                }
                continuation.resume(with: Result { try work() })
            }
        }
    }
}

public enum StorageError: Error, Equatable {
    case noSpace
    case missingBlob(String)
    case io(operation: String, errno: Int32)

    package static func from(_ operation: String, errno code: Int32) -> StorageError {
        code == ENOSPC || code == EDQUOT ? .noSpace : .io(operation: operation, errno: code)
    }
}
