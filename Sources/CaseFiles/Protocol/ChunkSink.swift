import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Counts a request body's bytes so a watchdog can stop a client that stalls or trickles.
final class ReceiveWatch: Sendable {
    private let state = NIOLockedValueBox<(bytes: Int64, cutOff: Bool)>((0, false))

    func add(_ count: Int) { state.withLockedValue { $0.bytes += Int64(count) } }
    var bytes: Int64 { state.withLockedValue { $0.bytes } }
    var wasCutOff: Bool { state.withLockedValue { $0.cutOff } }
    func markCutOff() { state.withLockedValue { $0.cutOff = true } }
}

/// One request body's bytes on their way to disk: the chunk's digest (for `Upload-Checksum`), the
/// whole file's running SHA-256, and the blob appender. Owned by one request at a time (the upload's
/// writer lock), hence `@unchecked Sendable`.
final class ChunkSink: @unchecked Sendable {
    private(set) var chunkDigest: ChunkDigest?
    private(set) var fileDigest: SHA256Digest
    let appender: BlobAppender

    /// Buffers below this are handled inline: a hop to the pool would cost more than it frees.
    static let offloadThreshold = 64 * 1024
    /// Below this a buffer is hashed on one core: handing it to a second costs more than it saves.
    static let parallelHashingThreshold = 128 * 1024

    init(chunkDigest: ChunkDigest?, fileDigest: SHA256Digest, appender: BlobAppender) {
        self.chunkDigest = chunkDigest
        self.fileDigest = fileDigest
        self.appender = appender
    }

    func consume(_ buffer: ByteBuffer) async throws {
        if buffer.readableBytes < Self.offloadThreshold {
            try consumeHere(buffer)
        } else {
            // Hashing costs ~1.4 ns a byte; done on Swift's cooperative pool (two threads on a two-core
            // machine) it would make every other request, a 1 ms HEAD probe included, wait behind uploads.
            try await BulkWork.primary.runIfActive {
                BulkWork.lowerPriority()
                try self.consumeHere(buffer)
            }
        }
    }

    private func consumeHere(_ buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { bytes in
            guard chunkDigest != nil, bytes.count >= Self.parallelHashingThreshold else {
                chunkDigest?.update(bytes)
                fileDigest.update(bytes)
                try appender.append(bytes)
                return
            }
            // The two SHA-256 passes over the same bytes run on both cores at once.
            var writeError: (any Error)?
            BulkWork.inParallel({
                chunkDigest!.update(bytes)
                do { try appender.append(bytes) } catch { writeError = error }
            }, {
                fileDigest.update(bytes)
            })
            if let writeError { throw writeError }
        }
    }
}
