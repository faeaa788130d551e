import NIOCore
import CaseFilesCore

/// A request body with `Content-Encoding: gzip` or `deflate` (`casefiles-content-encoding`) on its way into a
/// `ChunkSink`: the encoded bytes feed the chunk's digest (`Upload-Checksum` covers the bytes as sent) and
/// zlib (`Inflater`); the decoded bytes feed the whole-file SHA-256 and the blob, so offsets and lengths count
/// the file as stored. Both limits are checked on every piece of output BEFORE it is written: the upload's
/// room (413 as for a plain body) and the expansion ratio (`UploadLimits.maxCompressionRatio`, 413), so a
/// decompression bomb writes nothing past either. Owned by one request (the upload's writer lock).
///
/// Encoded buffers are taken in batches of `batchSize` and inflated on the bulk-work pool (one hop per batch):
/// inflating ~9x as many bytes out costs more than hashing them, and must not hold up the event loop.
package final class DecodingSink: @unchecked Sendable {
    package let sink: ChunkSink
    private let inflater: Inflater
    private let bulkWork: BulkWork
    /// The digest of the encoded bytes, for `Upload-Checksum` (nil without one).
    package private(set) var chunkDigest: ChunkDigest?
    /// Decoded bytes the upload can still take (nil: no limit).
    private let room: Int64?
    private let maxRatio: Int64
    private var batch: [ByteBuffer] = []
    private var batchBytes = 0
    /// Encoded bytes taken so far (the body as sent: compared with `Content-Length`).
    package private(set) var encodedReceived: Int64 = 0
    /// Decoded bytes written so far.
    package private(set) var decoded: Int64 = 0
    /// The decoded bytes would have run past the room: reading stopped, nothing past it written.
    package private(set) var overran = false
    /// Why the body is not acceptable as a stream (corrupt, trailing data, too high a ratio), if it is not.
    package private(set) var failure: UploadError?

    /// Encoded bytes per hop to the bulk pool. At a log's ~9:1 that is ~2 MiB out, two staging buffers.
    package static let batchSize = 256 * 1024
    /// Decoded bytes always allowed before the ratio applies: a small file's gzip header and trailer
    /// (18 bytes) and a short run of zeros must not look like a bomb.
    package static let ratioAllowance: Int64 = 1 << 20

    /// - Parameters: coding: the body's content coding; room: decoded bytes the upload can still take (nil:
    ///   no limit); maxRatio: decoded bytes allowed per encoded byte past `ratioAllowance`.
    /// - Throws: `UploadError.contentEncodingInvalid` if zlib cannot start.
    package init(_ coding: ContentCoding, into sink: ChunkSink, chunkDigest: ChunkDigest?, room: Int64?, maxRatio: Int,
                 bulkWork: BulkWork, offset: Int64) throws {
        do { inflater = try Inflater(coding) } catch {
            throw UploadError.contentEncodingInvalid(coding, problem: "\(error)", offset: offset)
        }
        self.sink = sink
        self.chunkDigest = chunkDigest
        self.room = room
        self.maxRatio = Int64(maxRatio)
        self.bulkWork = bulkWork
    }

    /// The body ended where its stream ended (one complete stream, checks passed).
    package var streamEnded: Bool { inflater.ended }

    /// The refusal of a body that ended, complete as far as HTTP goes, before its stream did.
    package var truncation: UploadError {
        .contentEncodingInvalid(inflater.coding, problem: "the body ended before its stream did (truncated)",
                                offset: sink.start)
    }

    /// Whether reading must stop: the room or the ratio ran out, or the stream is not valid.
    package var stopped: Bool { overran || failure != nil }

    /// Takes one encoded buffer; inflates a batch once it holds `batchSize` bytes.
    /// - Returns: false once reading must stop (`overran` or `failure` says why).
    /// - Throws: a write's error (a full disk).
    package func consume(_ buffer: ByteBuffer) async throws -> Bool {
        batch.append(buffer)
        batchBytes += buffer.readableBytes
        encodedReceived += Int64(buffer.readableBytes)
        if batchBytes >= Self.batchSize { try await flush() }
        return !stopped
    }

    /// Inflates what is batched. Call it once the body ends, however it ends (unless reading stopped).
    /// - Throws: a write's error (a full disk).
    package func flush() async throws {
        let buffers = batch
        batch = []
        batchBytes = 0
        guard !buffers.isEmpty, !stopped else { return }
        try await bulkWork.run { try self.decodeHere(buffers) }
    }

    private enum Limit: Error { case room, ratio }

    private func decodeHere(_ buffers: [ByteBuffer]) throws {
        do {
            for buffer in buffers {
                try buffer.withUnsafeReadableBytes { encoded in
                    chunkDigest?.update(encoded)
                    try inflater.inflate(encoded) { piece in try take(piece) }
                }
            }
        } catch Limit.room {
            overran = true
        } catch Limit.ratio {
            failure = .compressionRatioExceeded(limit: Int(maxRatio))
        } catch let error as Inflater.Failure {
            let problem = switch error {
            case .corrupt(let detail): "the data is not valid \(inflater.coding.rawValue) (zlib: \(detail))"
            case .trailingData: "bytes follow the end of the stream (trailing data, or a second gzip member)"
            }
            failure = .contentEncodingInvalid(inflater.coding, problem: problem, offset: sink.start)
        }
    }

    /// One piece of output, checked against both limits before a byte of it is written.
    private func take(_ piece: UnsafeRawBufferPointer) throws {
        let after = decoded + Int64(piece.count)
        if let room, after > room { throw Limit.room }
        // The ratio is over the whole request so far: encoded bytes zlib has consumed against decoded bytes out.
        if after > Self.ratioAllowance && after > maxRatio * inflater.totalIn { throw Limit.ratio }
        try sink.takeDecoded(piece)
        decoded = after
    }
}
