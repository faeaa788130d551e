import Foundation
import Logging
import NIOCore
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// One request body appended at an upload's committed offset, for any front-end (tus today): prepared
/// before the body is read, then run: `BodyReceiver` → `AppendDecision` → `UploadCommitter` or a discard.
/// A body with a checksum is all-or-nothing; one without keeps whatever arrived before a cut. The caller
/// holds the upload's writer lock (`UploadWriter.run`).
package struct UploadAppend: Sendable {
    package let upload: Upload
    private let sink: ChunkSink
    /// The body's decoder, for a body with a content coding (nil: the bytes go to `sink` as they are).
    private let decoder: DecodingSink?
    private let room: UploadRoom?
    /// The user whose bytes these are (recorded with the offset).
    private let sender: Int64
    private let contentLength: Int64?
    private let checksum: (ChecksumAlgorithm, [UInt8])?
    private let services: AppServices

    /// Checks the room for `contentLength`, restores the whole-file digest and opens the blob at the
    /// committed offset (bytes past it, from a request cut before its commit, are dropped).
    /// - Parameters: sender: the user id sending the bytes (only the creator may: the caller checks);
    ///   contentLength: the body's declared size in bytes (nil: not declared); checksum: the digest the
    ///   request declared of its own bytes (tus `Upload-Checksum` or RFC 9530 `Content-Digest`: algorithm, digest); coding: the body's `Content-Encoding` (nil: none): then
    ///   `contentLength` counts encoded bytes, says nothing of the decoded size and is not checked against
    ///   the room; the decoded bytes are, as they inflate (`DecodingSink`).
    /// - Throws: `UploadError.bodyExceedsLength` / `.uploadTooLarge` / `.insufficientSpace` /
    ///   `.caseStorageQuota` for a body declared past the room;
    ///   storage errors.
    ///   requestStarted: `MonotonicClock.nanoseconds()` when the front-end took the request (the timeline's start).
    package static func prepare(
        _ upload: Upload, by sender: Int64, contentLength: Int64?, checksum: (ChecksumAlgorithm, [UInt8])?,
        coding: ContentCoding? = nil, services: AppServices, requestStarted: UInt64 = MonotonicClock.nanoseconds()
    ) async throws -> UploadAppend {
        var room = UploadRoom(length: upload.length, offset: upload.offset, maxUploadSize: services.limits.maxUploadSize)
        if upload.length == nil {
            // A deferred length promised nothing: its bytes are checked as they arrive, against the maximum size,
            // the free space less every reservation, and the case's quota.
            room = try await SpaceReservations.deferredRoom(room, upload: upload,
                                                            contentLength: coding == nil ? contentLength : nil,
                                                            services: services)
        }
        if coding == nil { try room?.check(contentLength) }
        guard let restored = SHA256Digest(savedState: upload.digestState) else {
            throw StorageError.io(operation: "restore digest state", errno: 0)
        }
        let appender = try await services.blobs.openForAppend(id: upload.id, at: upload.offset)
        let chunkDigest = checksum.map { ChunkDigest($0.0) }
        // With a coding, the chunk's digest covers the encoded bytes: the decoder keeps it, the sink has none.
        let sink = ChunkSink(chunkDigest: coding == nil ? chunkDigest : nil, fileDigest: restored, appender: appender,
                             bulkWork: services.bulkWork,
                             timeline: AppendTimeline(upload: upload.id, offset: upload.offset, started: requestStarted))
        let decoder = try coding.map {
            try DecodingSink($0, into: sink, chunkDigest: chunkDigest, room: room?.bytes,
                             maxRatio: services.limits.maxCompressionRatio, bulkWork: services.bulkWork,
                             offset: upload.offset)
        }
        return UploadAppend(
            upload: upload, sink: sink, decoder: decoder,
            room: room, sender: sender, contentLength: contentLength, checksum: checksum, services: services)
    }

    /// Reads `body` into the blob, decides, and commits or discards.
    /// - Parameters: body: nil for a request without one (an empty upload's creation); writer: the request's
    ///   writer (nil without the lock), which says why a read stopped.
    /// - Returns: the upload as committed.
    /// - Throws: `UploadError`, `CaseFilesError` (case closed meanwhile; shutting down), the body stream's
    ///   own error after a client broke it off, storage and database errors.
    package func run<Body: AsyncSequence>(_ body: Body?, writer: UploadWriter?, logger: Logger) async throws -> Upload
    where Body.Element == ByteBuffer {
        guard let trace = services.uploadTrace else { return try await append(body, writer: writer, logger: logger) }
        let faults = ProcessMemory.minorFaults() ?? 0
        do {
            let committed = try await append(body, writer: writer, logger: logger)
            record(in: trace, outcome: "committed", faultsBefore: faults)
            return committed
        } catch {
            // The error's case name (`checksumMismatch`, `superseded`...), without its values.
            record(in: trace, outcome: String(String(describing: error).prefix { $0 != "(" }), faultsBefore: faults)
            throw error
        }
    }

    private func record(in trace: UploadTraceLog, outcome: String, faultsBefore: Int) {
        var timeline = sink.finishedTimeline(outcome: outcome)
        timeline.minorFaults = (ProcessMemory.minorFaults() ?? faultsBefore) - faultsBefore
        trace.record(timeline)
    }

    private func append<Body: AsyncSequence>(_ body: Body?, writer: UploadWriter?, logger: Logger) async throws -> Upload
    where Body.Element == ByteBuffer {
        let outcome = if let body, let decoder {
            await BodyReceiver.receive(body, decoding: decoder, contentLength: contentLength, writer: writer)
        } else {
            await BodyReceiver.receive(body, into: sink, room: room, contentLength: contentLength, writer: writer)
        }
        switch AppendDecision.decide(outcome, checksum: ChecksumVerdict(expected: checksum, computed: outcome.chunkDigest)) {
        case .discard(let refusal):
            if refusal == .writeFailed {
                try? await sink.discard()
            } else {
                try await sink.discard()
            }
            if case .checksumMismatch(let algorithm) = refusal {
                services.metrics.checksumMismatch(algorithm)
                logger.notice("checksum mismatch", metadata: ["upload": "\(upload.id)", "offset": "\(upload.offset)"])
            }
            throw await error(for: refusal, outcome)
        case .commit(let then):
            // In a task of its own, so a stopped request still finishes making its bytes durable and recorded.
            let committer = UploadCommitter(services: services)
            let (upload, sink, fileDigest, sender) = (self.upload, self.sink, outcome.fileDigest, self.sender)
            let committed: Upload
            do {
                committed = try await Task {
                    try await committer.commit(upload, by: sender, sink: sink, fileDigest: fileDigest)
                }.value
            } catch {
                // Nothing past the committed offset counts; dropping it now also gives back the space when the
                // disk is full (SQLite needs a little to record anything). The offset stays at the last durable byte.
                try? await sink.discard()
                throw await domainError(error)
            }
            // A request stopped after its last byte completed the upload answers the completion.
            if let then, committed.state == .uploading { throw await error(for: then, outcome) }
            if committed.state == .failed {
                services.metrics.wholeFileDigestMismatches.increment()
                services.metrics.uploadFailed(reason: "whole_file_digest_mismatch")
                throw UploadError.wholeFileDigestMismatch(declared: committed.declaredSHA256 ?? "", computed: committed.sha256 ?? "")
            }
            if committed.state == .verified {
                services.metrics.uploadsFinished.increment()
                logger.info("upload verified", metadata: ["upload": "\(upload.id)", "sha256": "\(committed.sha256 ?? "")"])
            }
            return committed
        }
    }

    private func error(for refusal: AppendRefusal, _ outcome: AppendOutcome) async -> any Error {
        switch refusal {
        case .stopped(let reason): AppendDecision.error(for: reason, limits: services.limits, bodyError: outcome.bodyError)
        case .checksumMismatch(let algorithm): UploadError.checksumMismatch(algorithm, offset: upload.offset)
        case .overran: room?.refusal ?? UploadError.bodyExceedsLength(length: upload.length ?? 0)
        case .writeFailed: await domainError(outcome.writeFailure ?? StorageError.noSpace)
        case .undecodable(let failure): failure
        }
    }

    /// A full disk and a case closed while the bytes arrived, as the domain's errors.
    private func domainError(_ error: any Error) async -> any Error {
        switch error {
        case StorageError.noSpace: UploadError.diskFull
        case let closed as CaseClosedDuringUpload: await services.cases.closedCaseError(closed.caseNumber)
        default: error
        }
    }
}
