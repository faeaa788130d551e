import Foundation
import CaseFilesCore
import CaseFilesStorage

/// What `Upload-Checksum` (tus checksum extension) says of a request's bytes.
package enum ChecksumVerdict: Sendable, Equatable {
    /// The request carried no checksum: the bytes that arrived count, even after a cut.
    case absent
    case matched
    case mismatched(ChecksumAlgorithm)

    /// - Parameters: expected: the algorithm and digest the request declared; computed: the digest of the
    ///   bytes that arrived (nil without a checksum).
    package init(expected: (ChecksumAlgorithm, [UInt8])?, computed: ChunkDigest?) {
        guard let expected, let computed else {
            self = .absent
            return
        }
        self = computed.finalize() == expected.1 ? .matched : .mismatched(expected.0)
    }
}

/// Why a request's bytes are refused, or why the request is answered with an error after its commit.
package enum AppendRefusal: Sendable, Equatable {
    /// The writer stopped before the body ended.
    case stopped(StopReason)
    case checksumMismatch(ChecksumAlgorithm)
    /// The body ran past the room the upload had left.
    case overran
    /// A compressed body that is not one complete stream (400), or that expands past the ratio (413).
    case undecodable(UploadError)
    /// A write failed (a full disk): the running digest may already cover bytes the disk refused.
    case writeFailed
}

/// What becomes of a request's bytes once its body read ended, however it ended: the one rule, pure, so it
/// is tested without a server (`AppendDecisionTests`).
package enum AppendDecision: Sendable, Equatable {
    /// Make the bytes durable and record them (`UploadCommitter`); then, unless they completed the upload,
    /// answer `then` (nil: success).
    case commit(then: AppendRefusal?)
    /// Truncate the blob back to the committed offset: none of the request's bytes count.
    case discard(AppendRefusal)

    /// - Parameters: outcome: how the body read ended (`BodyReceiver`); checksum: what `Upload-Checksum` says.
    package static func decide(_ outcome: AppendOutcome, checksum: ChecksumVerdict) -> AppendDecision {
        // A failed write first: the digests may cover bytes that never reached the disk.
        if outcome.writeFailure != nil { return .discard(.writeFailed) }
        if outcome.overran { return .discard(.overran) }
        // A broken stream is refused whole, checksum or not: zlib checks gzip's CRC-32 only at the end, so
        // the bytes it decoded before the fault are not known to be the sender's.
        if let failure = outcome.decodingFailure { return .discard(.undecodable(failure)) }
        switch (outcome.stopReason, checksum) {
        case (let stop?, .absent):
            return .commit(then: .stopped(stop))  // without a checksum, what arrived before a cut is kept
        case (let stop?, _):
            return .discard(.stopped(stop))  // with one, a request is all-or-nothing
        case (nil, .mismatched(let algorithm)):
            return .discard(.checksumMismatch(algorithm))
        case (nil, .absent), (nil, .matched):
            return .commit(then: nil)
        }
    }

    /// The error a writer stopped for `reason` answers: `bodyError`, the body stream's own error, only when the
    /// client went away (broken HTTP framing stays a 400); a cancellation otherwise says nothing more.
    package static func error(for reason: StopReason, limits: UploadLimits, bodyError: (any Error)? = nil) -> any Error {
        switch reason {
        case .superseded: UploadError.superseded
        case .tooSlow: UploadError.tooSlow(minimumRate: limits.minReceiveRate, window: limits.stallWindow)
        case .shutdown: CaseFilesError.shuttingDown()
        case .clientGone: bodyError.flatMap { $0 is CancellationError ? nil : $0 } ?? UploadError.bodyIncomplete
        }
    }
}
