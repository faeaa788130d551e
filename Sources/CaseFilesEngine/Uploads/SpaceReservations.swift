import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage
import Foundation

/// The free-space rule: bytes an upload promises (its declared length, less what it has written) are reserved
/// until they arrive, so uploads cannot together promise more than the disk has. The reservations are read
/// from the uploads' rows (`MetadataStore.reservedBytes`), so completion, termination, expiry and purge release
/// them by changing the upload's state, with no counter to drift. A creation sums the reservations in its own
/// insert's transaction (`UploadQuotas.insert`), so two creations at the same instant cannot both take the same
/// room; a write that still finds the disk full is refused whole (`UploadError.diskFull`).
package enum SpaceReservations {
    /// Bytes that may still be promised or written, in bytes: the storage filesystem's free space (`available`)
    /// less the reserve (`UploadLimits.minFreeBytes`) and less every unfinished upload's reservation (`reserved`).
    /// May be negative. A store without a free-space figure (`available` nil: an object store) leaves nothing
    /// to check here: `Int64.max`, and the size and case quotas still apply.
    package static func room(available: Int64?, reserved: Int64, limits: UploadLimits) -> Int64 {
        guard let available else { return .max }
        return available - limits.minFreeBytes - reserved
    }

    /// `room(available:reserved:limits:)` with the free space and the reservations as they are now.
    package static func room(services: AppServices) async throws -> Int64 {
        let available = try await services.blobs.availableBytes()
        let reserved = try await services.database.reservedBytes()
        return room(available: available, reserved: reserved, limits: services.limits)
    }

    /// Refuses promising `bytes` more than `room` (bytes) allows.
    /// - Throws: `UploadError.insufficientSpace` (507; its figures are logged, not sent).
    package static func check(_ bytes: Int64, room: Int64) throws {
        if bytes > room { throw UploadError.insufficientSpace(requested: bytes, available: max(0, room)) }
    }

    /// Refuses promising `bytes` more than the room now allows (a deferred length set now).
    /// - Throws: `UploadError.insufficientSpace`.
    package static func check(_ bytes: Int64, services: AppServices) async throws {
        try check(bytes, room: try await room(services: services))
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
/// (`MetadataStore.uploadUsage`), in the insert's own transaction at creation (`insert`).
package enum UploadQuotas {
    /// Inserts `upload`'s row if the creation quotas (`checkCreation`) and the free space (`SpaceReservations`,
    /// for `bytes`: its length, or the body it carries while the length is deferred) allow it, both checked in
    /// the insert's own write transaction (`MetadataStore.createUpload(_:admitting:)`): creations at the same
    /// instant are counted one after the other, so exactly as many as the limits allow succeed. The free space
    /// itself (statvfs) is read just before; what must be atomic is the sum of the reservations.
    /// - Throws: what `checkCreation` and `SpaceReservations.check` throw (nothing is inserted then); the
    ///   metadata store's and the blob store's errors.
    package static func insert(_ upload: Upload, reserving bytes: Int64, services: AppServices) async throws {
        let limits = services.limits
        let available = try await services.blobs.availableBytes()
        try await services.database.createUpload(upload) { usage, reserved in
            try checkCreation(usage, caseNumber: upload.caseNumber, length: upload.length, limits: limits)
            try SpaceReservations.check(bytes, room: SpaceReservations.room(available: available, reserved: reserved,
                                                                            limits: limits))
        }
    }

    /// Creates `upload`, the one way every front-end (tus, IETF, the curl PUT) does: its blob first, then its row
    /// through `insert` (quotas and free space checked in the row's own transaction). A crash between the two leaves
    /// an orphan file the startup sweep removes, never a row without its file; a refusal removes the blob again.
    /// - Throws: what `insert` throws.
    package static func create(_ upload: Upload, reserving bytes: Int64, services: AppServices) async throws {
        try await services.blobs.create(id: upload.id)
        do {
            try await insert(upload, reserving: bytes, services: services)
        } catch {
            try? await services.blobs.remove(id: upload.id)  // if this fails too, the orphan sweep removes it
            throw error
        }
    }

    /// Refuses creating an upload of `length` bytes (nil: deferred) in `caseNumber`, given what its creator and the
    /// case hold (`usage`).
    /// - Throws: `UploadError.unfinishedUploadsPerUserQuota`, `.unfinishedUploadsPerCaseQuota`,
    ///   `.caseStorageQuota`.
    package static func checkCreation(_ usage: UploadUsage, caseNumber: String, length: Int64?, limits: UploadLimits) throws {
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
