import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage
import Foundation

/// What an append asks of its upload before any byte is read, in no protocol's terms: the offset it appends at,
/// a length it fixes (a deferred length is fixed once), the whole file's SHA-256 it declares (once), and the
/// body's length when the request states it. tus fills it from `Upload-Offset`, `Upload-Length`,
/// `Repr-Digest` and `Content-Length`; another front-end from its own fields.
package struct AppendRequest: Sendable {
    package var offset: Int64
    package var newLength: Int64?
    package var declaredSHA256: String?
    package var contentLength: Int64?

    package init(offset: Int64, newLength: Int64?, declaredSHA256: String?, contentLength: Int64?) {
        self.offset = offset
        self.newLength = newLength
        self.declaredSHA256 = declaredSHA256
        self.contentLength = contentLength
    }
}

/// The rules an append must pass, each in one place, for every front-end: the upload takes bytes, the offset
/// matches, a length and a digest are fixed once, the body fits, the disk has room.
package enum UploadAdmission {
    /// Whether `upload` takes bytes now: unfinished and not expired (the clock decides, not the sweep).
    /// - Throws: `UploadError.gone` (with the state the client should see), `.alreadyComplete`.
    package static func checkWritable(_ upload: Upload, now: Date, expiry: TimeInterval) throws {
        switch upload.state {
        case .uploading:
            if upload.isExpired(at: now, expiry: expiry) {
                var expired = upload
                expired.state = .expired
                throw UploadError.gone(expired)
            }
        case .verified: throw UploadError.alreadyComplete(upload)
        case .failed, .terminated, .expired, .purged: throw UploadError.gone(upload)
        }
    }

    /// Refuses `bytes` (new bytes an upload may still take) that would eat into the free-space reserve or into
    /// other uploads' reservations (`SpaceReservations`).
    /// - Throws: `UploadError.insufficientSpace`.
    package static func checkFreeSpace(for bytes: Int64, services: AppServices) async throws {
        try await SpaceReservations.check(bytes, services: services)
    }

    /// Under the upload's writer lock: re-reads the upload (the request it superseded may have committed more
    /// bytes) and checks `request` against it, recording a length set now or a digest declared now. A refused
    /// request changes nothing.
    /// - Returns: the upload as the append starts from.
    /// - Throws: `UploadError` (`.notFound`, `.gone`, `.alreadyComplete`, `.offsetMismatch`, `.lengthFixed`,
    ///   `.lengthBelowOffset`, `.uploadTooLarge`, `.caseStorageQuota`, `.insufficientSpace`, `.bodyExceedsLength`,
    ///   `.conflictingDigest`); the metadata store's errors.
    package static func admit(_ request: AppendRequest, uploadID: String, services: AppServices) async throws -> Upload {
        guard var upload = try await services.database.upload(id: uploadID) else { throw UploadError.notFound(uploadID) }
        try checkWritable(upload, now: services.now(), expiry: services.limits.uploadExpiry)
        guard request.offset == upload.offset else {
            throw UploadError.offsetMismatch(expected: upload.offset, got: request.offset)
        }
        if let newLength = request.newLength {
            if let length = upload.length, length != newLength { throw UploadError.lengthFixed(length) }
            if upload.length == nil {
                guard newLength >= upload.offset else { throw UploadError.lengthBelowOffset(upload.offset) }
                if let max = services.limits.maxUploadSize, newLength > max { throw UploadError.uploadTooLarge(max: max) }
                try await UploadQuotas.checkDeclaredLength(newLength, upload: upload, services: services)
                try await checkFreeSpace(for: newLength - upload.offset, services: services)
                // Decided before the length is recorded: a refused request changes nothing.
                try UploadRoom.check(request.contentLength, length: newLength, offset: upload.offset,
                                     maxUploadSize: services.limits.maxUploadSize)
                try await services.database.setUploadLength(id: upload.id, length: newLength, at: services.now())
                upload.length = newLength
            }
        }
        if let declared = request.declaredSHA256 {
            if let earlier = upload.declaredSHA256, earlier != declared { throw UploadError.conflictingDigest(earlier) }
            if upload.declaredSHA256 == nil {
                try await services.database.declareSHA256(id: upload.id, sha256: declared)
                upload.declaredSHA256 = declared
            }
        }
        return upload
    }
}
