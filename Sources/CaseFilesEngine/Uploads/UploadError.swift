import Foundation
import CaseFilesCore

/// The upload engine's refusals, as values: no HTTP here. The server turns each into its answer in one
/// place (`APIError.init(mapping:)`); a shutdown is `CaseFilesError.shuttingDown()` (kind `.unavailable`),
/// a case closed mid-body `CaseFilesError.caseClosed`, and an error of the body stream itself (broken
/// HTTP framing, say) is passed on as it is.
public enum UploadError: Error, Sendable, Equatable {
    /// A newer request for the upload took over; this one kept what it had committed.
    case superseded
    /// The body arrived slower than `minimumRate` bytes/s over `window` seconds and was stopped.
    case tooSlow(minimumRate: Double, window: TimeInterval)
    /// The body ended before all of it arrived, without an error of its own: the client went away.
    case bodyIncomplete
    /// The chunk's digest did not match `Upload-Checksum`; nothing of it was kept. `offset`: where to resend from.
    case checksumMismatch(ChecksumAlgorithm, offset: Int64)
    /// The body runs past the upload's declared length (bytes); nothing was kept.
    case bodyExceedsLength(length: Int64)
    /// The body runs past the server's maximum upload size (bytes), for a deferred length; nothing was kept.
    case uploadTooLarge(max: Int64)
    /// A body with `Content-Encoding` that is not one complete stream of it (corrupt, truncated, trailing data
    /// or a second gzip member); nothing of it was kept. `offset`: where to resend from.
    case contentEncodingInvalid(ContentCoding, problem: String, offset: Int64)
    /// A compressed body expanded past `limit` decoded bytes per encoded byte (a decompression bomb, to the
    /// server); nothing of it was kept.
    case compressionRatioExceeded(limit: Int)
    /// The whole file's SHA-256 (`computed`, hex) is not the `declared` one: the upload failed for good.
    case wholeFileDigestMismatch(declared: String, computed: String)
    /// A write of this request's bytes failed for lack of space; none of them were kept.
    case diskFull
    /// No upload by that id (as far as the caller may know).
    case notFound(String)
    /// The upload can take no more bytes: failed, terminated, expired or purged (its state says which).
    case gone(Upload)
    /// The upload is complete; it takes no more bytes.
    case alreadyComplete(Upload)
    /// The request appends at `got`, the upload is at `expected` (bytes).
    case offsetMismatch(expected: Int64, got: Int64)
    /// The upload's length is already this many bytes and cannot change.
    case lengthFixed(Int64)
    /// A deferred length below the bytes already received (this many).
    case lengthBelowOffset(Int64)
    /// A whole-file SHA-256 other than the one declared earlier (hex).
    case conflictingDigest(String)
    /// Taking `requested` more bytes would eat into the free-space reserve and every unfinished upload's
    /// reservation; `available` bytes are free above them. The figures are for the operator's log only.
    case insufficientSpace(requested: Int64, available: Int64)
    /// The user already has `limit` unfinished uploads (`UploadLimits.maxUnfinishedUploadsPerUser`).
    case unfinishedUploadsPerUserQuota(limit: Int)
    /// The case already has `limit` unfinished uploads (`UploadLimits.maxUnfinishedUploadsPerCase`).
    case unfinishedUploadsPerCaseQuota(caseNumber: String, limit: Int)
    /// The case would hold more than `limit` bytes, declared plus stored (`UploadLimits.maxCaseBytes`).
    case caseStorageQuota(caseNumber: String, limit: Int64)
}

extension CaseFilesError {
    /// The server is shutting down: the request stopped and kept what it had committed; the same
    /// request succeeds once the server is back (`Retry-After`, added by the server's mapping).
    public static func shuttingDown() -> CaseFilesError {
        CaseFilesError(.unavailable, "shutting_down",
                       "The server is restarting, so this request stopped and kept what it had committed. "
                       + "Retry in a few seconds: send a HEAD request and resume from its Upload-Offset.")
    }

    /// The same stop for a creation-with-upload request, which leaves nothing behind (no `Location` was sent).
    public static func shuttingDownBeforeCreation() -> CaseFilesError {
        CaseFilesError(.unavailable, "shutting_down",
                       "The server is restarting, so this upload was not created. Retry in a few seconds: send the "
                       + "same POST again.")
    }
}

/// How many more bytes an upload can take: up to its `Upload-Length`, or for a deferred length up to the
/// server's maximum upload size. Nil when a deferred length meets a server without a maximum.
package struct UploadRoom: Sendable, Equatable {
    /// Bytes the upload can still take from `offset`.
    package var bytes: Int64
    /// The answer to a body with more than `bytes`.
    package var refusal: UploadError

    /// - Parameters: length: the upload's length in bytes (nil: deferred); offset: its committed offset;
    ///   maxUploadSize: the server's maximum in bytes (nil: none).
    package init?(length: Int64?, offset: Int64, maxUploadSize: Int64?) {
        if let length {
            self.init(bytes: length - offset, refusal: .bodyExceedsLength(length: length))
        } else if let max = maxUploadSize {
            self.init(bytes: max - offset, refusal: .uploadTooLarge(max: max))
        } else {
            return nil
        }
    }

    package init(bytes: Int64, refusal: UploadError) {
        self.bytes = bytes
        self.refusal = refusal
    }

    /// Refuses a body whose declared size (`Content-Length`, bytes) is more than `bytes`, before a byte is read.
    /// - Throws: `refusal`.
    package func check(_ contentLength: Int64?) throws {
        if let contentLength, contentLength > bytes { throw refusal }
    }

    /// The tighter of two rooms (for a deferred length: the maximum size, the free space, the case's quota).
    package static func smaller(_ a: UploadRoom?, _ b: UploadRoom) -> UploadRoom {
        guard let a else { return b }
        return b.bytes < a.bytes ? b : a
    }

    /// Refuses a body whose declared size (`Content-Length`, bytes) is more than the room, before a byte is read.
    /// - Throws: `refusal`.
    package static func check(_ contentLength: Int64?, length: Int64?, offset: Int64, maxUploadSize: Int64?) throws {
        if let room = UploadRoom(length: length, offset: offset, maxUploadSize: maxUploadSize), let contentLength,
           contentLength > room.bytes
        {
            throw room.refusal
        }
    }
}
