import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage
import Foundation

/// The free-space rule: bytes an upload promises (its declared length, less what it has written) are reserved
/// until they arrive, so uploads cannot together promise more than the disk has. The reservations are read
/// from the uploads' rows (`MetadataStore.reservedBytes`), so completion, termination, expiry and purge release
/// them by changing the upload's state, with no counter to drift. Two creations at the same instant may both
/// pass; a write that then finds the disk full is still refused whole (`UploadError.diskFull`).
package enum SpaceReservations {
    /// Bytes that may still be promised or written, in bytes: the storage filesystem's free space less the reserve
    /// (`UploadLimits.minFreeBytes`) and less every unfinished upload's reservation. May be negative.
    package static func room(services: AppServices) async throws -> Int64 {
        let available = try await services.blobs.availableBytes()
        let reserved = try await services.database.reservedBytes()
        return available - services.limits.minFreeBytes - reserved
    }

    /// Refuses promising `bytes` more than `room` allows (a creation's length, a deferred length set now).
    /// - Throws: `UploadError.insufficientSpace` (507; its figures are logged, not sent).
    package static func check(_ bytes: Int64, services: AppServices) async throws {
        let room = try await room(services: services)
        if bytes > room { throw UploadError.insufficientSpace(requested: bytes, available: max(0, room)) }
    }

    /// How many bytes an upload whose length is still deferred may take now, checked as they arrive: the
    /// server's maximum upload size (`sizeRoom`, nil without one), the free space less every reservation, and
    /// the case's byte quota, whichever is smallest; its refusal names the rule.
    /// - Parameter contentLength: the body's declared size in bytes, if declared (for the log's figure).
    package static func deferredRoom(
        _ sizeRoom: UploadRoom?, upload: Upload, contentLength: Int64?, services: AppServices
    ) async throws -> UploadRoom {
        let space = max(0, try await room(services: services))
        var room = UploadRoom.smaller(
            sizeRoom, UploadRoom(bytes: space, refusal: .insufficientSpace(requested: contentLength ?? space + 1,
                                                                             available: space)))
        let usage = try await services.database.uploadUsage(caseNumber: upload.caseNumber, userID: upload.createdBy)
        let caseRoom = max(0, services.limits.maxCaseBytes - usage.caseBytes)
        room = UploadRoom.smaller(room, UploadRoom(
            bytes: caseRoom, refusal: .caseStorageQuota(caseNumber: upload.caseNumber, limit: services.limits.maxCaseBytes)))
        return room
    }
}

/// The creation quotas, each a limit in `UploadLimits` with a `serve` flag: unfinished uploads per user and
/// per case (429), declared plus stored bytes per case (413). Counted from the rows in one query
/// (`MetadataStore.uploadUsage`).
package enum UploadQuotas {
    /// Refuses creating an upload of `length` bytes (nil: deferred) by `userID` in `caseNumber`.
    /// - Throws: `UploadError.unfinishedUploadsPerUserQuota`, `.unfinishedUploadsPerCaseQuota`,
    ///   `.caseStorageQuota`.
    package static func checkCreation(caseNumber: String, userID: Int64, length: Int64?, services: AppServices) async throws {
        let limits = services.limits
        let usage = try await services.database.uploadUsage(caseNumber: caseNumber, userID: userID)
        if usage.unfinishedByUser >= limits.maxUnfinishedUploadsPerUser {
            throw UploadError.unfinishedUploadsPerUserQuota(limit: limits.maxUnfinishedUploadsPerUser)
        }
        if usage.unfinishedInCase >= limits.maxUnfinishedUploadsPerCase {
            throw UploadError.unfinishedUploadsPerCaseQuota(caseNumber: caseNumber, limit: limits.maxUnfinishedUploadsPerCase)
        }
        try checkCaseBytes(usage.caseBytes, adding: length ?? 0, caseNumber: caseNumber, limits: limits)
    }

    /// Refuses fixing a deferred length of `newLength` bytes on `upload` (which counts its offset until then).
    /// - Throws: `UploadError.caseStorageQuota`.
    package static func checkDeclaredLength(_ newLength: Int64, upload: Upload, services: AppServices) async throws {
        let usage = try await services.database.uploadUsage(caseNumber: upload.caseNumber, userID: upload.createdBy)
        try checkCaseBytes(usage.caseBytes - upload.offset, adding: newLength, caseNumber: upload.caseNumber,
                           limits: services.limits)
    }

    private static func checkCaseBytes(_ caseBytes: Int64, adding bytes: Int64, caseNumber: String, limits: UploadLimits) throws {
        // Subtraction, not addition: a declared length near Int64.max must not overflow.
        if bytes > limits.maxCaseBytes - caseBytes {
            throw UploadError.caseStorageQuota(caseNumber: caseNumber, limit: limits.maxCaseBytes)
        }
    }
}
