import Foundation
import NIOCore
import NIOPosix
import CaseFilesCore

/// Where upload bytes live: local files (`FileBlobStore`) or an S3-compatible object store (`S3BlobStore`, in
/// CaseFilesObjectStorage). Knows nothing of HTTP, tus or the database: the upload engine validates offsets and
/// holds the upload's writer lock (`UploadWriter`) before calling in, and the metadata store is the authority on
/// how many bytes of a blob are committed (bytes past that are garbage, dropped by the next `openForAppend`).
///
/// Every call that can wait (on a disk or a network) is `async`; a store runs blocking work on its own threads.
public protocol BlobStore: Sendable {
    /// The threads the store's blocking work runs on, and that callers use for the blocking reads of
    /// `BlobReader.read(at:into:)` (the bundle index's pass, an archive entry's read).
    var threads: StorageThreads { get }

    /// Creates an empty blob, durably (it exists before the upload's row does); the id is server-generated,
    /// never a client-supplied name.
    func create(id: String) async throws

    /// Opens a blob for appending at `offset`, the committed length (bytes). Anything stored past it (bytes of a
    /// request that was cut off before its commit) does not count and is dropped or overwritten.
    /// - Throws: `StorageError.missingBlob`, the store's errors.
    func openForAppend(id: String, at offset: Int64) async throws -> any BlobAppender

    /// Makes a blob whose `length` bytes are all committed (its upload just became verified) the finished,
    /// readable object. Idempotent. Local files need nothing; an object store completes its multipart upload.
    /// - Returns: the finished object's entity tag as the store gives it (S3: the ETag, quotes included), which the
    ///   caller records (`MetadataStore.recordStoredObject`); nil for a store without one (local files).
    /// - Throws: `StorageError.missingBlob`, the store's errors.
    @discardableResult
    func complete(id: String, length: Int64) async throws -> String?

    /// Opens a completed blob for reading.
    /// - Throws: `StorageError.missingBlob`, the store's errors.
    func openForReading(id: String) async throws -> any BlobReader

    /// Removes a blob and everything the store keeps for it; a missing blob is not an error.
    func remove(id: String) async throws

    /// Every blob the store holds something of, finished or not, with when it was last written: what the
    /// orphan sweep (`AppServices.sweepOrphanBlobs`) compares with the metadata store's rows.
    func storedBlobs() async throws -> [StoredBlob]

    /// Bytes available to the service, or nil when the store has no free-space figure (an object store):
    /// then the free-space rule (`SpaceReservations`) has nothing to check, and the size and quota limits
    /// still apply.
    func availableBytes() async throws -> Int64?
}

/// One blob as the orphan sweep sees it.
public struct StoredBlob: Sendable, Equatable {
    public var id: String
    /// When anything of it was last written (real time), for the sweep's age threshold.
    public var lastModified: Date
    /// Stored but not completed (`BlobStore.complete`): for an object store, a multipart upload or tail object
    /// without the finished object. Local files are always false.
    public var unfinished: Bool

    public init(id: String, lastModified: Date, unfinished: Bool = false) {
        self.id = id
        self.lastModified = lastModified
        self.unfinished = unfinished
    }
}

extension BlobStore {
    /// The ids of `storedBlobs()`.
    public func storedIDs() async throws -> [String] {
        try await storedBlobs().map(\.id)
    }
}

/// Appends one request's bytes to a blob. Owned by exactly one request at a time (the upload's writer lock
/// guarantees it), so implementations are `@unchecked Sendable` classes.
///
/// The upload hot path: `append` is called for every body buffer on a bulk-work thread, so implementations
/// do no allocation, locking or logging per call (a full staging buffer or part is handed to a background
/// writer instead).
public protocol BlobAppender: AnyObject, Sendable {
    /// The committed length the appender started from (bytes).
    var start: Int64 { get }
    /// Where the next byte goes (bytes).
    var position: Int64 { get }
    /// Bytes that can be appended before the next slow step (a device write, a part upload): appending fewer
    /// never waits; appending this many fills the buffer and hands it over, which may wait for the write before
    /// it. Small batches with room to spare are appended on the calling thread (`ChunkSink.consumesInline`).
    var stagingRoom: Int { get }
    /// Where this appender's time went (`--trace-uploads`).
    var timings: BlobIOTimings { get }

    /// Takes `bytes` (copied before returning). Called on a bulk-work thread; may wait there for the previous
    /// background write. Blocking: never call it on an event loop.
    /// - Throws: `StorageError.noSpace` and the store's errors (then the request's bytes are discarded whole).
    func append(_ bytes: UnsafeRawBufferPointer) throws

    /// Makes every appended byte durable in the store (fdatasync; for an object store, parts and the tail
    /// object stored), before the offset is committed.
    func sync() async throws

    /// Drops everything appended since `start` (a chunk that failed its checksum, say).
    func discard() async throws
}

/// Reads ranges of a completed blob. One reader per consumer: a store may keep the read position's state
/// (an object store keeps one streamed GET open for sequential reads).
public protocol BlobReader: AnyObject, Sendable {
    /// Reads up to `count` bytes at `offset` into a new buffer; fewer only at the end of the blob.
    func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) async throws -> ByteBuffer

    /// Reads up to `target.count` bytes at `offset` into `target`, for readers that keep their own buffer (the
    /// bundle index's single pass); returns how many, fewer only at the end of the blob. Blocking: call it on a
    /// thread that may wait (`BlobStore.threads.blocking`, the indexer's own), never on an event loop.
    @available(*, noasync, message: "it blocks: run it on a blocking thread")
    func read(at offset: Int64, into target: UnsafeMutableRawBufferPointer) throws -> Int
}

extension BlobReader {
    /// `read(at:into:)` into a new buffer of up to `count` bytes: blocking, for code already on a blocking thread.
    @available(*, noasync, message: "it blocks: use the async overload")
    public func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            try read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: target[0..<count]))
        }
        return buffer
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
