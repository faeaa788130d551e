import CaseFilesCore
import Foundation

/// The service's metadata (users, cases, uploads, downloads, links, settings, the purge audit log) as
/// intention-named transactions: what controllers, jobs and the CLI hold (`AppServices.database`), so a second
/// implementation (PostgreSQL) is a new type behind this protocol, not a change to them. `AppDatabase` is the
/// SQLite one. Only `Sendable` values cross it, never a database type.
///
/// Every requirement is `async`: an implementation runs its queries off the caller's thread (GRDB on its own
/// queues). The named exception is the in-place key lookups (`activeUser`, `uploadWithCase`, `downloadLink`):
/// `AppDatabase` runs them on the calling thread, which is cheaper than two thread hops (ARCHITECTURE.md,
/// "The data path").
///
/// Errors: `CaseFilesError` for the domain's refusals (a case not found; `.databaseFull` when the disk cannot take
/// a write), `CaseNumberTaken`, `CaseClosedDuringUpload`, `UploadChangedUnderWriter`, and the implementation's own
/// errors for anything unexpected (answered as a logged 500).
public protocol MetadataStore: BackupLeaseStore, EventOutbox {
    /// Takes the write lock in a transaction and rolls it back (`GET /readyz`): throws if the database cannot
    /// be written (read-only, locked past the busy timeout, gone). Changes nothing.
    func probeWrite() async throws

    // MARK: Users

    /// Inserts a user and returns it with its id.
    func createUser(_ user: User) async throws -> User
    /// The active (not revoked) user holding a token with this hash. Runs in place (see above).
    func activeUser(tokenHash: String) async throws -> User?
    /// Returns false when no active user has that name.
    func revokeUser(named name: String, at date: Date) async throws -> Bool
    func allUsers() async throws -> [User]
    func user(id: Int64) async throws -> User?
    func userNames(ids: Set<Int64>) async throws -> [Int64: String]

    // MARK: Cases

    /// Inserts the case; with no number given, takes the next one after the highest in use.
    /// - Throws: `CaseNumberTaken` when a given number exists.
    func createCase(_ supportCase: SupportCase, numberGiven: Bool) async throws -> SupportCase
    func supportCase(number: String) async throws -> SupportCase?
    /// Cases visible to a user: a customer sees their account's, staff see all.
    func cases(visibleTo user: User) async throws -> [SupportCase]
    /// One page of them: at most `limit` cases numbered above `after`, in number order.
    func cases(visibleTo user: User, after: String?, limit: Int) async throws -> [SupportCase]
    func allCases() async throws -> [SupportCase]
    /// Reads a case, applies `transition` and records the event, all in one transaction; a transition that closes
    /// the case revokes its drop credentials in it.
    /// - Throws: `CaseFilesError.caseNotFound`, or what `transition` throws (nothing is written then).
    func transitionCase(
        _ number: String, kind: CaseEvent.Kind, actor: String, comment: String?, at now: Date,
        _ transition: @Sendable (SupportCase) throws -> SupportCase
    ) async throws -> SupportCase
    func caseHistory(_ number: String) async throws -> [CaseEvent]
    /// One page of a case's history: at most `limit` events with an id above `after`, in id order.
    func caseHistory(_ number: String, after: Int64?, limit: Int) async throws -> [CaseEvent]

    // MARK: Uploads

    /// An upload and the case it belongs to, in one read: every upload and download request starts here.
    /// Runs in place (see above).
    func uploadWithCase(id: String) async throws -> (Upload, SupportCase)?
    func createUpload(_ upload: Upload) async throws
    /// Inserts an upload if `admit` accepts what the user and the case hold (`UploadUsage`) and the bytes every
    /// unfinished upload has reserved (as `reservedBytes()`), both read in the insert's own write transaction, so
    /// that two creations at the same instant are counted one after the other (the quotas and the free-space
    /// reservations are then exact, not best-effort).
    /// - Throws: what `admit` throws (nothing is inserted then).
    func createUpload(
        _ upload: Upload, admitting admit: @Sendable (UploadUsage, _ reservedBytes: Int64) throws -> Void
    ) async throws
    func upload(id: String) async throws -> Upload?
    /// Sets a deferred length once (creation-defer-length).
    /// - Throws: `UploadChangedUnderWriter` if it was already set or is below the offset.
    func setUploadLength(id: String, length: Int64, at date: Date) async throws
    /// Commits bytes that are already durable on disk: the new offset, the digest state that covers exactly
    /// [0, newOffset) and, when the upload just completed, its final state, in one transaction; only if the
    /// stored offset is still `expectedOffset`, the upload still `uploading` and its case not Closed.
    /// - Throws: `CaseClosedDuringUpload` (the case was closed), `UploadChangedUnderWriter` (offset or state moved).
    /// `sender` (a user id) is recorded as the author of bytes [expectedOffset, newOffset) in the same transaction.
    func recordAppend(
        id: String, by sender: Int64, from expectedOffset: Int64, to newOffset: Int64, digestState: Data,
        completion: UploadCompletion?, at date: Date
    ) async throws
    /// Who sent which bytes of an upload (`recordAppend`'s authors), in offset order.
    func appends(uploadID: String) async throws -> [AppendRecord]
    /// Records a whole-file digest declared after creation (Repr-Digest on a PATCH), if none was.
    func declareSHA256(id: String, sha256: String) async throws
    /// Records the entity tag the blob store gave a verified upload's finished object (S3: the ETag of the completed
    /// multipart upload or PutObject, quotes included; at most 256 characters), replacing any: which object the
    /// SHA-256 was verified for. Nothing for other states.
    func recordStoredObject(uploadID: String, etag: String) async throws
    /// tus termination of an unfinished upload; the caller removes its blob.
    func terminateUpload(id: String, at date: Date) async throws
    /// Verified attachments and unfinished uploads of one case, oldest first.
    func uploads(caseNumber: String) async throws -> [Upload]
    /// One page of a case's listing (`GET /api/v1/cases/{n}/attachments`): at most `limit` of its verified,
    /// purged and unfinished uploads, in (createdAt, id) order, after `after`.
    func caseListing(_ caseNumber: String, after: ListingPosition?, limit: Int) async throws -> [Upload]
    /// Removes an unfinished or failed upload whose creation request failed before its `201`; returns whether a
    /// row was removed (the caller then removes its blob).
    func deleteFailedCreation(id: String) async throws -> Bool
    /// Marks the unfinished uploads expired at `now` (`Upload.isExpired`, `expiry` in seconds) as `expired`
    /// and returns their ids, whose blobs the caller then removes.
    func expireUploads(at now: Date, expiry: TimeInterval) async throws -> [String]
    /// Every upload's state by id, for the orphan sweep.
    func uploadStates() async throws -> [String: UploadState]
    /// Bytes promised but not yet written: the sum over unfinished uploads of (length - offset), deferred lengths
    /// counting nothing. Read from the rows in one query, so completion, termination, expiry and purge release a
    /// reservation by changing the upload's state, with no counter to drift.
    func reservedBytes() async throws -> Int64
    /// What the creation quotas are checked against, in one query: the user's unfinished uploads, the case's,
    /// and the case's declared plus stored bytes.
    func uploadUsage(caseNumber: String, userID: Int64) async throws -> UploadUsage

    // MARK: Downloads and signed links

    /// Logs a download; for one through a signed link, in the same transaction, settles the link's byte count:
    /// the `reserved` bytes charged before sending become the bytes actually sent.
    func recordDownload(_ download: Download, settlingLink nonce: String?, reserved: Int64) async throws
    /// The download access log, newest first, optionally for one case or attachment.
    func downloads(caseNumber: String?, attachmentID: String?, limit: Int) async throws -> [DownloadEntry]
    func createDownloadLink(_ link: DownloadLink) async throws
    /// The link with this nonce, if it was issued for this attachment. Runs in place (see above).
    func downloadLink(nonce: String, uploadID: String) async throws -> DownloadLink?
    /// Charges `count` bytes to a link before they are sent, if that keeps it within `budget` bytes, atomically.
    /// - Returns: false when the link has not `count` bytes left.
    func reserveLinkBytes(nonce: String, count: Int64, budget: Int64) async throws -> Bool
    /// Deletes the links no longer usable at `now`: past their expiry, or issued more than `maxLifetime` seconds
    /// ago (`DownloadLinks.isLive`'s cap). Returns how many.
    func pruneExpiredLinks(at now: Date, maxLifetime: TimeInterval) async throws -> Int

    // MARK: Drop credentials (issue #20)

    /// Inserts a drop credential and returns it with its id.
    func createDropToken(_ token: DropToken) async throws -> DropToken
    /// A case's drop credentials, oldest first, revoked and expired ones included.
    func dropTokens(caseNumber: String) async throws -> [DropToken]
    /// Revokes one of the case's drop credentials at `date` (a revoked one keeps its first revocation time).
    /// - Returns: the credential as it now is; nil when the case has none with that id.
    func revokeDropToken(id: Int64, caseNumber: String, at date: Date) async throws -> DropToken?
    /// The drop credential with this secret hash and its case, usable or not (`DropToken.isUsable` decides).
    /// Runs in place (see above).
    func dropToken(tokenHash: String) async throws -> (DropToken, SupportCase)?
    /// Records that the credential authenticated a request at `date`.
    func markDropTokenUsed(id: Int64, at date: Date) async throws
    /// The newest unfinished upload named `filename` in the case created by this uploader (`createdBy` and the
    /// drop credential, nil for a user's own token): what the curl front-end's HEAD and `Content-Range` PUT address.
    func newestUnfinishedUpload(caseNumber: String, filename: String, createdBy: Int64, dropToken: Int64?) async throws -> Upload?

    // MARK: Settings

    func retentionSettings() async throws -> RetentionSettings
    func setSetting(_ key: String, _ value: String) async throws

    // MARK: Retention purge

    /// The cases `PurgeEligibility` calls due or held at `asOf`, each with its uploads that own a blob
    /// (`UploadState.blobOwners`), oldest first.
    func casesDueForPurge(asOf: Date, settings: RetentionSettings) async throws -> [(SupportCase, [Upload])]
    /// Marks runs still `running` (killed) as `interrupted`, with the totals of the items they recorded.
    func closeInterruptedPurgeRuns(at now: Date) async throws
    func insertPurgeRun(_ run: PurgeRun) async throws -> PurgeRun
    func updatePurgeRun(_ run: PurgeRun) async throws
    /// Turns one upload that owns a blob into a tombstone and writes its audit row, in one transaction;
    /// returns false if it no longer owned a blob. The caller removes the blob afterwards.
    func purgeUpload(_ upload: Upload, runID: Int64, at now: Date) async throws -> Bool
    func markCasePurged(_ supportCase: SupportCase, policy: String, at now: Date) async throws
    func purgeRuns(limit: Int) async throws -> [PurgeRun]
    func purgeItems(runID: Int64) async throws -> [PurgeItem]

    // MARK: tus concatenation (AppDatabase+Concatenation.swift)

    /// Inserts a final upload (`concat` final, state `uploading`, offset 0) and its partials, in order, in one
    /// transaction, if each is still a complete partial upload no other final uses.
    /// - Throws: `CaseFilesError.partialAlreadyUsed`, `UploadChangedUnderWriter` (a partial expired or changed).
    func createFinalUpload(_ final: Upload, partialIDs: [String]) async throws
    /// A final upload's partial uploads, in order.
    func finalParts(finalID: String) async throws -> [Upload]
    /// The final upload a partial upload is part of, if any. Runs in place (see above).
    func finalUsing(partialID: String) async throws -> String?
    /// Final uploads whose verification has not finished (after a crash, too), oldest first.
    func unverifiedFinals() async throws -> [String]
    /// Records a final upload's verification progress: bytes [0, newOffset) of its partials, in order, read and
    /// hashed (`digestState`), and on the last byte its outcome; `failed` fails its partials in the same transaction.
    /// - Throws: `UploadChangedUnderWriter` if the final is not at `expectedOffset` or no longer unverified.
    func recordFinalVerification(
        id: String, from expectedOffset: Int64, to newOffset: Int64, digestState: Data, completion: UploadCompletion?,
        at date: Date
    ) async throws

    // MARK: Bundle index (issue #21)

    /// The oldest verified attachment without a finished index (none, or one left `pending` by a restart).
    func nextAttachmentToIndex() async throws -> Upload?
    /// Replaces the attachment's index with this one, its entries and checkpoints, in one transaction; false
    /// (and nothing written) when the attachment is no longer verified (purged meanwhile).
    func saveBundleIndex(_ index: BundleIndex, entries: [BundleEntry], checkpoints: [BundleCheckpoint]) async throws -> Bool
    func bundleIndex(attachmentID: String) async throws -> BundleIndex?
    /// One page of entries: at most `limit` numbered above `after`, whose path starts with `prefix` (bytes), by number.
    func bundleEntries(attachmentID: String, prefix: String?, after: Int?, limit: Int) async throws -> [BundleEntry]
    /// Every entry with exactly this path (tar allows several), by number.
    func bundleEntries(attachmentID: String, path: String) async throws -> [BundleEntry]
    /// The checkpoint with the greatest output offset at or before `outputOffset`, if any.
    func bundleCheckpoint(attachmentID: String, atOrBefore outputOffset: Int64) async throws -> BundleCheckpoint?
}

extension MetadataStore {
    /// Logs a download that did not go through a signed link.
    public func recordDownload(_ download: Download) async throws {
        try await recordDownload(download, settlingLink: nil, reserved: 0)
    }
}

extension CaseFilesError {
    /// The metadata store's disk is full: the change was not saved (HTTP 507).
    public static let databaseFull = CaseFilesError(
        .insufficientStorage, "insufficient_storage",
        "The server's disk is full, so this change was not saved (everything saved before is intact). "
        + "Retry later; uploads resume from the Upload-Offset that HEAD returns.")
}

/// The case was closed while bytes were arriving: nothing more is committed to it.
public struct CaseClosedDuringUpload: Error {
    public let caseNumber: String
    public init(caseNumber: String) { self.caseNumber = caseNumber }
}

/// An upload's row no longer matches what its writer read (its offset or state moved, or its deferred length was
/// already set): the write was refused rather than skip or overwrite bytes.
public struct UploadChangedUnderWriter: Error, CustomStringConvertible {
    public let id: String
    public let detail: String
    public var description: String { "upload \(id): \(detail)" }
    public init(id: String, detail: String) {
        self.id = id
        self.detail = detail
    }
}

public struct CaseNumberTaken: Error, CustomStringConvertible {
    public let number: String
    public var description: String { "case \(number) already exists" }
    public init(number: String) { self.number = number }
}

public enum UploadCompletion: Sendable {
    case verified(sha256: String)
    case failed(sha256: String)
}

