import Foundation
import NIOCore
import NIOPosix
import CaseFilesCore
import CaseFilesStorage

/// One request body's bytes on their way to disk: the chunk's digest (for `Upload-Checksum`), the
/// whole file's running SHA-256, and the blob appender. Owned by one request at a time (the upload's
/// writer lock), hence `@unchecked Sendable`.
///
/// Buffers are taken in batches of about 1 MiB: each batch costs a few thread wake-ups (to the bulk
/// pools and back), which are dear on a virtual machine; one batch per socket read (up to 512 KiB) spent
/// about 5% more CPU per GiB. Larger batches saved little more and held more memory per upload.
package final class ChunkSink: @unchecked Sendable {
    package private(set) var chunkDigest: ChunkDigest?
    /// The whole file's running SHA-256; with a queued lane (`fileLane`), complete only once `settle()` returned.
    package private(set) var fileDigest: SHA256Digest
    /// With a chunk digest and a free place (`BulkWork.maxFileLanes`), the whole file's SHA-256 runs in a queued
    /// lane of its own from the first batch worth two cores on, so the two passes over a batch do not wait for
    /// each other; otherwise they run in lockstep (`BulkWork.inParallel`), and without a chunk digest the single
    /// pass runs beside the write. Taken at that batch, not before: a small or refused request never holds it.
    private var fileLane: FileDigestLane?
    private let appender: any BlobAppender
    private let bulkWork: BulkWork
    private var batch: [ByteBuffer] = []
    private var batchBytes = 0
    /// This request's timeline so far (`--trace-uploads`); the sink is where its parts meet.
    package var timeline: AppendTimeline

    /// A batch is handed to the bulk pools once it holds this much; meanwhile the event loop keeps
    /// reading the body into the request's buffer (up to ten socket reads).
    package static let batchSize = 1 << 20
    /// Batches below this are handled inline (`consumesInline`): a hop to the pool would cost more than it frees.
    package static let offloadThreshold = 64 * 1024
    /// Below this a batch is hashed on one core: handing it to a second costs more than it saves.
    package static let parallelHashingThreshold = 128 * 1024

    package init(chunkDigest: ChunkDigest?, fileDigest: SHA256Digest, appender: any BlobAppender, bulkWork: BulkWork,
                 timeline: AppendTimeline) {
        self.timeline = timeline
        self.bulkWork = bulkWork
        self.chunkDigest = chunkDigest
        self.fileDigest = fileDigest
        self.appender = appender
    }

    /// Bytes taken so far, written or still in the current batch.
    package var received: Int64 { appender.position - appender.start + Int64(batchBytes) }

    /// The committed offset (bytes) this request's bytes start at.
    package var start: Int64 { appender.start }

    /// Where the next flushed byte goes: `start` plus the bytes flushed so far.
    package var position: Int64 { appender.position }

    /// Makes every flushed byte durable (fdatasync, off the calling thread).
    package func sync() async throws { try await appender.sync() }

    /// Drops every byte of this request from the blob (truncates back to `start`), off the calling thread.
    package func discard() async throws { try await appender.discard() }

    package func consume(_ buffer: ByteBuffer) async throws {
        batch.append(buffer)
        batchBytes += buffer.readableBytes
        if batchBytes >= Self.batchSize { try await flush() }
    }

    /// Hashes and writes the current batch. Call it once the body ends (unless a write failed), then `settle()`.
    package func flush() async throws {
        let buffers = batch, count = batchBytes
        batch = []
        batchBytes = 0
        let started = MonotonicClock.nanoseconds()
        defer { timeline.batches += MonotonicClock.since(started) }
        if fileLane == nil, chunkDigest != nil, count >= Self.parallelHashingThreshold {
            // `fileDigest` is complete here: every earlier batch was hashed in lockstep or inline.
            fileLane = FileDigestLane(digest: fileDigest, bulkWork: bulkWork)
            timeline.fileLane = fileLane != nil
        }
        // The queued lane first: it starts on its pool while this batch goes to the other. Waiting for room in
        // its queue is this lane waiting for that one, as the lockstep's end-of-batch wait is.
        if let fileLane, count > 0 {
            await fileLane.enqueue(buffers, bytes: count)
            timeline.laneWait += MonotonicClock.since(started)
        }
        if Self.consumesInline(count: count, stagingRoom: appender.stagingRoom) {
            try consumeHere(buffers, count: count)
        } else {
            // Hashing costs ~1.4 ns a byte; done on the threads that run handlers (in `serve`, the two event
            // loops of a two-core machine) it would make every other request, a HEAD probe included, wait.
            let handedOver = MonotonicClock.nanoseconds()
            let done = try await bulkWork.run {
                self.timeline.poolHop += MonotonicClock.since(handedOver)
                try self.consumeHere(buffers, count: count)
                return MonotonicClock.nanoseconds()
            }
            timeline.resumeHop += MonotonicClock.since(done)
        }
    }

    /// Waits for a queued whole-file lane to hash everything flushed, so `fileDigest` and the timeline are
    /// complete. Call it once the body has ended, however it ended, before reading either.
    package func settle() async {
        guard let fileLane else { return }
        let started = MonotonicClock.nanoseconds()
        let (digest, hashTime) = await fileLane.drained()
        timeline.settleWait += MonotonicClock.since(started)
        fileDigest = digest
        timeline.hashFile += hashTime  // plus any batches hashed in lockstep before the lane was taken
    }

    /// Whether a batch of `count` bytes is hashed and appended on the calling thread (in `serve`, an event loop):
    /// only a small one that leaves room in the appender's buffer (`BlobAppender.stagingRoom`, bytes). A batch
    /// that fills the buffer hands it over, and that can wait for the write or part upload before it: on an
    /// event loop that blocks every connection of the loop, and with the S3 appender, whose part uploads run on
    /// those same loops, it never ends (a CI run of 2026-11-29 hung there when a batch was exactly the room left).
    package static func consumesInline(count: Int, stagingRoom: Int) -> Bool {
        count < offloadThreshold && count < stagingRoom
    }

    /// Takes decoded bytes (a compressed body's output, `DecodingSink`) straight to the whole-file SHA-256 and
    /// the blob. Runs on the bulk-work thread that inflated them; the chunk's digest covers the encoded bytes
    /// and is the decoder's, so this sink has none.
    package func takeDecoded(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(fileLane == nil, "a decoding sink has no chunk digest, hence no queued lane")
        let started = MonotonicClock.nanoseconds()
        fileDigest.update(bytes)
        timeline.hashFile += MonotonicClock.since(started)
        try appender.append(bytes)
    }

    /// The timeline with the storage's part and the commit filled in; call once the request is over.
    package func finishedTimeline(outcome: String) -> AppendTimeline {
        var timeline = self.timeline
        timeline.storage = appender.timings
        timeline.bytes = max(0, appender.position - appender.start)
        timeline.outcome = outcome
        timeline.ended = MonotonicClock.nanoseconds()
        timeline.total = timeline.ended &- timeline.started
        return timeline
    }

    private func consumeHere(_ buffers: [ByteBuffer], count: Int) throws {
        if fileLane == nil, chunkDigest != nil, count >= Self.parallelHashingThreshold {
            return try consumeInLockstep(buffers)
        }
        // One pass here: the chunk's digest (if any), the whole file's unless a queued lane has it, the write.
        let hashesFile = fileLane == nil
        for buffer in buffers {
            try buffer.withUnsafeReadableBytes { bytes in
                let started = MonotonicClock.nanoseconds()
                chunkDigest?.update(bytes)
                if hashesFile { fileDigest.update(bytes) }
                let hashed = MonotonicClock.since(started)
                if hashesFile { timeline.hashFile += hashed } else { timeline.hashChunk += hashed }
                try appender.append(bytes)
            }
        }
    }

    /// The two SHA-256 passes over the same bytes on both cores at once, meeting at the batch's end.
    private func consumeInLockstep(_ buffers: [ByteBuffer]) throws {
        var writeError: (any Error)?
        var hashChunk: UInt64 = 0, hashFile: UInt64 = 0, firstDone: UInt64 = 0
        bulkWork.inParallel({
            defer { firstDone = MonotonicClock.nanoseconds() }
            do {
                for buffer in buffers {
                    try buffer.withUnsafeReadableBytes { bytes in
                        let started = MonotonicClock.nanoseconds()
                        chunkDigest!.update(bytes)
                        hashChunk += MonotonicClock.since(started)
                        try appender.append(bytes)
                    }
                }
            } catch { writeError = error }
        }, {
            let started = MonotonicClock.nanoseconds()
            for buffer in buffers {
                buffer.withUnsafeReadableBytes { fileDigest.update($0) }
            }
            hashFile = MonotonicClock.since(started)
        })
        timeline.laneWait += MonotonicClock.since(firstDone)
        timeline.hashChunk += hashChunk
        timeline.hashFile += hashFile
        if let writeError { throw writeError }
    }
}
