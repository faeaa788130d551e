import Foundation

/// tus expiration (tus 1.0 "Expiration" extension): an unfinished upload lives `expiry` seconds past its last
/// progress (`updatedAt`), and from `Upload-Expires` on it is gone. The one comparison: the upload path
/// (`checkWritable`, 410 before the sweep has run) and the expiry sweep (`MetadataStore.expireUploads`, whose
/// SQL narrows candidates with `expiryCandidatesBound` and keeps those this rule calls expired) both use it.
extension Upload {
    /// `Upload-Expires`: when an upload that last progressed at `lastProgress` expires.
    public static func expiresAt(lastProgress: Date, expiry: TimeInterval) -> Date {
        lastProgress.addingTimeInterval(expiry)
    }

    /// Whether an upload that last progressed at `lastProgress` has expired at `now`: from `expiresAt` on, that
    /// instant included (one nanosecond earlier it has not).
    /// - Parameter expiry: seconds (`UploadLimits.uploadExpiry`, `serve --upload-expiry`).
    public static func isExpired(lastProgress: Date, at now: Date, expiry: TimeInterval) -> Bool {
        now >= expiresAt(lastProgress: lastProgress, expiry: expiry)
    }

    /// Whether this upload is unfinished and expired at `now`.
    public func isExpired(at now: Date, expiry: TimeInterval) -> Bool {
        state == .uploading && Self.isExpired(lastProgress: updatedAt, at: now, expiry: expiry)
    }

    /// The latest last-progress time that can be expired at `now` (now minus the expiry), for narrowing
    /// candidates in SQL; `isExpired(lastProgress:at:expiry:)` decides.
    public static func expiryCandidatesBound(at now: Date, expiry: TimeInterval) -> Date {
        now.addingTimeInterval(-expiry)
    }
}
