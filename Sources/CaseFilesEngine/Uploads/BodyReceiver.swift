import Foundation
import NIOCore
import CaseFilesCore

/// How one request body's read ended: what the engine knows once the body stopped, however it stopped.
package struct AppendOutcome: Sendable {
    /// Bytes of this request now past the committed offset (written, or staged in the appender).
    package var received: Int64
    /// The body ran past the room the upload had left; reading stopped before the buffer that would pass it.
    package var overran: Bool
    /// The error of a write that failed (a full disk), if one did.
    package var writeFailure: (any Error)?
    /// Why the body ended early (a stop, or fewer bytes than `Content-Length`), if it did.
    package var stopReason: StopReason?
    /// The error the body stream itself threw, if it did (broken HTTP framing, a reset connection).
    package var bodyError: (any Error)?
    /// A compressed body that is not one complete stream, or that expands past the ratio (`DecodingSink`).
    package var decodingFailure: UploadError?
    /// The digest of this request's bytes as sent, for `Upload-Checksum` (nil without one).
    package var chunkDigest: ChunkDigest?
    /// The whole file's running SHA-256, covering the committed bytes and this request's.
    package var fileDigest: SHA256Digest

    package init(received: Int64, overran: Bool = false, writeFailure: (any Error)? = nil, stopReason: StopReason? = nil,
                 bodyError: (any Error)? = nil, decodingFailure: UploadError? = nil, chunkDigest: ChunkDigest? = nil, fileDigest: SHA256Digest = SHA256Digest()) {
        self.received = received
        self.overran = overran
        self.writeFailure = writeFailure
        self.stopReason = stopReason
        self.bodyError = bodyError
        self.decodingFailure = decodingFailure
        self.chunkDigest = chunkDigest
        self.fileDigest = fileDigest
    }
}

/// Feeds a request body into the blob and both digests (`ChunkSink`, in ~1 MiB batches) and reports how
/// it ended. Decides nothing: `AppendDecision` does.
package enum BodyReceiver {
    /// - Parameters:
    ///   - body: the request body's buffers (nil: a request without a body);
    ///   - room: the bytes the upload can still take (nil: no limit); reading stops before a buffer past it;
    ///   - contentLength: the body's declared size in bytes, if declared: fewer bytes is an early end;
    ///   - writer: counts bytes for the watchdog and says why the read was stopped, if it was.
    package static func receive<Body: AsyncSequence>(
        _ body: Body?, into sink: ChunkSink, room: UploadRoom?, contentLength: Int64?, writer: UploadWriter?
    ) async -> AppendOutcome where Body.Element == ByteBuffer {
        var bodyError: (any Error)?
        var writeFailure: (any Error)?
        var overran = false
        if let body {
            do {
                sink.timeline.setup = MonotonicClock.since(sink.timeline.started)
                var waitStarted = MonotonicClock.nanoseconds()
                for try await buffer in body {
                    sink.timeline.bodyWait += MonotonicClock.since(waitStarted)
                    defer { waitStarted = MonotonicClock.nanoseconds() }
                    if let room, sink.received + Int64(buffer.readableBytes) > room.bytes {
                        overran = true
                        break
                    }
                    writer?.add(buffer.readableBytes)
                    do { try await sink.consume(buffer) } catch { writeFailure = error; break }
                }
            } catch {
                bodyError = error
            }
            // Whatever arrived is kept, even after a cut: the last batch is written here.
            if !overran, writeFailure == nil {
                do { try await sink.flush() } catch { writeFailure = error }
            }
        }
        await sink.settle()
        let received = sink.position - sink.start
        var stopReason: StopReason?
        if bodyError != nil || Task.isCancelled || (contentLength.map { received < $0 } ?? false) {
            stopReason = writer?.stopReason ?? .clientGone
        }
        return AppendOutcome(received: received, overran: overran, writeFailure: writeFailure, stopReason: stopReason,
                             bodyError: bodyError, chunkDigest: sink.chunkDigest, fileDigest: sink.fileDigest)
    }

    /// The same for a body with a content coding: encoded buffers → `DecodingSink` (chunk digest, zlib, both
    /// limits) → decoded bytes into its `ChunkSink`. `contentLength` counts encoded bytes (the body as sent).
    /// A body that ends complete but before its stream does is refused (`decodingFailure`); one cut off (a
    /// stop) keeps its decoded bytes under the usual rules.
    package static func receive<Body: AsyncSequence>(
        _ body: Body, decoding decoder: DecodingSink, contentLength: Int64?, writer: UploadWriter?
    ) async -> AppendOutcome where Body.Element == ByteBuffer {
        let sink = decoder.sink
        var bodyError: (any Error)?
        var writeFailure: (any Error)?
        do {
            sink.timeline.setup = MonotonicClock.since(sink.timeline.started)
            var waitStarted = MonotonicClock.nanoseconds()
            for try await buffer in body {
                sink.timeline.bodyWait += MonotonicClock.since(waitStarted)
                defer { waitStarted = MonotonicClock.nanoseconds() }
                writer?.add(buffer.readableBytes)
                do {
                    guard try await decoder.consume(buffer) else { break }
                } catch { writeFailure = error; break }
            }
        } catch {
            bodyError = error
        }
        // Whatever arrived is kept, even after a cut: the last batch is inflated and written here.
        if writeFailure == nil {
            do { try await decoder.flush() } catch { writeFailure = error }
        }
        var stopReason: StopReason?
        if bodyError != nil || Task.isCancelled || (contentLength.map { decoder.encodedReceived < $0 } ?? false) {
            stopReason = writer?.stopReason ?? .clientGone
        }
        await sink.settle()
        var decodingFailure = decoder.failure
        if decodingFailure == nil, !decoder.overran, writeFailure == nil, stopReason == nil, !decoder.streamEnded {
            decodingFailure = decoder.truncation
        }
        return AppendOutcome(received: sink.position - sink.start, overran: decoder.overran, writeFailure: writeFailure,
                             stopReason: stopReason, bodyError: bodyError, decodingFailure: decodingFailure,
                             chunkDigest: decoder.chunkDigest, fileDigest: sink.fileDigest)
    }
}
