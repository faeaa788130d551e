import Foundation
import NIOConcurrencyHelpers
import CaseFilesCore
import CaseFilesStorage

/// Where one append request's time went, from the server's own clock (nanoseconds, monotonic): what
/// `serve --trace-uploads FILE` writes, one JSON object a line, and `Scripts/upload-timeline` sums up.
///
/// The phases of one request, in order: `setup` (from the front-end taking the request, through the
/// permission checks, the writer lock, the admission checks, restoring the digest and opening the blob, to
/// the first body read), then the body: `bodyWait` (waiting for the next bytes from the connection) and
/// `batches` (handing each ~1 MiB batch to the hashing lanes and waiting for them) alternate; inside a batch
/// the lanes run at once: `hashChunk` + `copy` + `writerWait` on one core, `hashFile` on the other, while
/// the writer threads do `deviceWrite`. A lone upload's `hashFile` runs in a queue of its own instead
/// (`fileLane`, `FileDigestLane`): it may lag, and `settleWait` waits for it once the body has ended. Then
/// `finalWrite` and `fdatasync` (making the bytes durable), `commit` (the SQLite transaction with the offset and digest state), and the answer. `total` runs from
/// the front-end taking the request to the commit's end; the gap until the next request of the same upload
/// (the response, the client's turn-around, the next request's headers) is the next line's `started`
/// minus this line's `ended`.
public struct AppendTimeline: Sendable, Codable, Equatable {
    public var upload: String
    /// The committed offset the request started at, and the bytes it added (bytes).
    public var offset: Int64
    public var bytes: Int64 = 0
    /// How it ended: `committed`, or the error code of a refusal.
    public var outcome = "committed"
    /// Monotonic nanoseconds at the front-end's start and at the commit's end.
    public var started: UInt64
    public var ended: UInt64 = 0
    public var total: UInt64 = 0
    public var setup: UInt64 = 0
    public var bodyWait: UInt64 = 0
    public var batches: UInt64 = 0
    /// Of `batches`: waiting for a bulk-work thread to pick the batch up.
    public var poolHop: UInt64 = 0
    /// Of `batches`: lane 1 waiting for lane 2: done with a batch, for lane 2 to finish it too (lockstep), or
    /// for room in lane 2's queue (`fileLane`).
    public var laneWait: UInt64 = 0
    /// Whether the whole file's SHA-256 ran in a queued lane of its own (`FileDigestLane`) rather than in lockstep.
    public var fileLane = false
    /// With `fileLane`, after the body: waiting for that lane to hash what it still held.
    public var settleWait: UInt64 = 0
    /// Of `batches`: from a batch done on the bulk pool until the request's task runs again.
    public var resumeHop: UInt64 = 0
    public var hashChunk: UInt64 = 0
    public var hashFile: UInt64 = 0
    public var storage = BlobIOTimings()
    public var commit: UInt64 = 0
    /// Minor page faults of the whole process during the request (fresh memory touched; see `ProcessMemory`).
    public var minorFaults: Int = 0

    /// - Parameter started: `MonotonicClock.nanoseconds()` when the front-end took the request.
    public init(upload: String, offset: Int64, started: UInt64) {
        self.upload = upload
        self.offset = offset
        self.started = started
    }
}

/// The `--trace-uploads` file: one `AppendTimeline` per append request, as a JSON line, appended under a lock
/// (a line is a few hundred bytes, written to the page cache; never fsynced: it is a diagnostic).
public final class UploadTraceLog: Sendable {
    private let handle: NIOLockedValueBox<FileHandle>

    /// Opens (creating, mode 0600) `path` for appending.
    /// - Throws: the file system's error when it cannot be created or opened.
    public init(path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StorageError.from("open trace file", errno: errno) }
        handle = NIOLockedValueBox(FileHandle(fileDescriptor: fd, closeOnDealloc: true))
    }

    package func record(_ timeline: AppendTimeline) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard var line = try? encoder.encode(timeline) else { return }
        line.append(0x0A)
        handle.withLockedValue { try? $0.write(contentsOf: line) }
    }
}
