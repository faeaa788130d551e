import Foundation
import Logging
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// Makes the blob store from the storage threads: how the composition root (`serve`) picks a store other than
/// local files without the engine depending on it.
public typealias BlobStoreFactory = @Sendable (StorageThreads) throws -> any BlobStore

/// What every controller and job shares, injected rather than global: storage, clock and limits.
public struct AppServices: Sendable {
    /// The metadata store: `AppDatabase` (SQLite, in the storage root, from `open`) or the one `open` is given
    /// (PostgreSQL, `serve --database`).
    public let database: any MetadataStore
    public let blobs: any BlobStore
    public let locks: UploadWriterLocks
    public let limits: UploadLimits
    /// The keys that sign download links (`link-signing.key`).
    public let linkKeys: LinkKeyFile
    public let security: SecurityPolicy
    /// The clock; tests move it.
    public let now: @Sendable () -> Date

    /// The upload engine's hashing lanes (the blob store has its own threads).
    public let bulkWork: BulkWork
    /// The domain's counters (`EngineMetrics.none` unless `serve --metrics-listen`).
    public let metrics: EngineMetrics

    /// Wakes the verifier of final uploads (tus concatenation, `ConcatenationVerifierService`).
    public let concatenation = ConcatenationSignal()

    /// Where each append request's timeline goes (`serve --trace-uploads FILE`); nil: not traced.
    public var uploadTrace: UploadTraceLog?

    /// Who writes each upload and who runs the once-only jobs, across the nodes sharing `database`
    /// (`SingleNode` on SQLite; set by `serve` on PostgreSQL).
    public var coordination: any NodeCoordination = SingleNode()

    /// Every case transition (HTTP and CLI).
    public var cases: CaseService {
        CaseService(database: database, now: now, maxCommentBytes: security.maxCommentBytes)
    }

    public init(database: any MetadataStore, blobs: any BlobStore, linkKeys: LinkKeyFile, bulkWork: BulkWork,
                limits: UploadLimits = .init(), security: SecurityPolicy = .init(), metrics: EngineMetrics = .none,
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.bulkWork = bulkWork
        self.metrics = metrics
        self.database = database
        self.blobs = blobs
        self.locks = UploadWriterLocks(metrics: metrics)
        self.linkKeys = linkKeys
        self.limits = limits
        self.security = security
        self.now = now
    }

    package static let databaseName = "casefiles.sqlite"

    /// Opens the storage root: `casefiles.sqlite` (WAL), `blobs/` and `link-signing.key`. Whatever is missing is
    /// created private to this user (folders 0700, files 0600: `PrivateStorage`), by `serve` and CLI commands
    /// alike; then the modes of what exists are checked, and each path others may access is logged as a warning.
    /// - Throws: `StoragePermissionsError` for such paths when `security.strictPermissions`; `LinkKeyFileError`
    ///   for a damaged key file; storage and database errors.
    /// - Parameter workers: the threads storage and the upload engine run on, owned by the caller (`serve` and
    ///   each CLI command make their own; tests share one set).
    /// - Parameter metadata: an already open (and migrated) metadata store to use instead of the storage root's
    ///   SQLite file, which is then neither created nor opened (`serve --database postgres://…`).
    @available(*, noasync, message: "creates files, migrates and fsyncs: call it on workers.storage.blockingIO")
    /// - Parameter blobStore: where blobs live when not in `<root>/blobs/` (`serve --blob-store s3://BUCKET`
    ///   makes an `S3BlobStore`); nil: `FileBlobStore` under the root.
    public static func open(storage root: URL, workers: WorkerThreads, metadata: (any MetadataStore)? = nil,
                            limits: UploadLimits = .init(),
                            security: SecurityPolicy = .init(), metrics: EngineMetrics = .none,
                            blobStore: BlobStoreFactory? = nil,
                            now: @escaping @Sendable () -> Date = { Date() }) throws -> AppServices {
        // Folders above the root are made as any folder would be; the root and all in it are private.
        try FileManager.default.createDirectory(at: root.deletingLastPathComponent(), withIntermediateDirectories: true)
        let services = try PrivateStorage.withPrivateUmask {
            try PrivateStorage.makeDirectory(root.path)
            let linkKeys = LinkKeyFile(root: root)
            let database: any MetadataStore
            if let metadata {
                database = metadata
            } else {
                let databasePath = root.appendingPathComponent(databaseName).path
                // SQLite creates -wal and -shm with the database file's mode, so that file must start out 0600.
                try PrivateStorage.makeFile(databasePath)
                database = try AppDatabase.open(path: databasePath) { legacyKey in
                    try linkKeys.createIfMissing(legacy: legacyKey)
                }
            }
            try linkKeys.createIfMissing()
            let blobs: any BlobStore = try blobStore?(workers.storage) ?? FileBlobStore(root: root, threads: workers.storage)
            return AppServices(database: database, blobs: blobs,
                               linkKeys: linkKeys, bulkWork: workers.bulkWork, limits: limits, security: security,
                               metrics: metrics, now: now)
        }
        let problems = permissionProblems(storage: root)
        if security.strictPermissions && !problems.isEmpty { throw StoragePermissionsError(problems: problems) }
        let logger = Logger(label: "casefiles")
        for problem in problems {
            logger.warning("storage path open to other users: \(problem); `serve --strict-permissions` refuses to start")
        }
        return services
    }

    /// Paths under the storage root that group or others may access, among those the start-up check looks at:
    /// the root, the database and its -wal and -shm, `blobs/` and its shard folders, and the link-signing key
    /// file. Not every blob: there may be millions, and `FileBlobStore` creates each one 0600.
    public static func permissionProblems(storage root: URL) -> [PrivateStorage.Problem] {
        let blobs = root.appendingPathComponent(FileBlobStore.folderName).path
        let shards = ((try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? []).sorted()
            .map { (blobs as NSString).appendingPathComponent($0) }
        let database = root.appendingPathComponent(databaseName).path
        return PrivateStorage.check([root.path, database, database + "-wal", database + "-shm", blobs] + shards
                                    + [root.appendingPathComponent(LinkKeyFile.name).path])
    }

    /// Removes blobs no upload owns (`UploadState.ownsBlob`): files of failed, terminated, expired or purged
    /// uploads whose removal was interrupted, and files with no row at all (a crash between creating a file and
    /// inserting its row). A file with no row may also be an upload being created right now, so while
    /// the server may be running only such files older than `unknownOlderThan` seconds are removed.
    /// In an object store, "blob" means all the store keeps for one (object, multipart upload, tail object).
    /// A verified upload whose blob is still unfinished (a crash between the completing commit and
    /// `BlobStore.complete`) is completed here, from its committed length.
    @discardableResult
    public func sweepOrphanBlobs(unknownOlderThan minimumAge: TimeInterval = 0) async throws -> [String] {
        // Nothing is removed while a backup holds its lease (`BackupLeaseStore`); the next sweep does it.
        if try await database.backupLease(at: now()) != nil { return [] }
        let states = try await database.uploadStates()
        var removed: [String] = []
        for blob in try await blobs.storedBlobs() {
            if let state = states[blob.id] {
                if state.ownsBlob {
                    if state == .verified, blob.unfinished, let upload = try await database.upload(id: blob.id) {
                        if let etag = try await blobs.complete(id: blob.id, length: upload.offset) {
                            await UploadCommitter.record(etag, of: blob.id, in: database)
                        }
                    }
                    continue
                }
            } else {
                // 0 takes every one, whatever its time: an object store may round a time up to its next second.
                guard minimumAge <= 0 || Date().timeIntervalSince(blob.lastModified) >= minimumAge else { continue }
            }
            try await blobs.remove(id: blob.id)
            removed.append(blob.id)
        }
        return removed
    }
}

/// How the storage root and download links are guarded.
public struct SecurityPolicy: Sendable {
    /// Refuse to open a storage root in which a checked path is open to other users (`serve
    /// --strict-permissions`), instead of logging a warning per path.
    public var strictPermissions: Bool
    /// The longest a signed download link lives, in seconds (`serve --max-link-lifetime`, default 5 minutes).
    public var maxLinkLifetime: TimeInterval

    /// State-changing requests a user may make per minute, other than the data routes (`serve --rate-limit`,
    /// default 60; 0: no limit). Enforced by the server's `RateLimitMiddleware` with `RateLimiter`.
    public var rateLimitPerMinute: Int
    /// The longest comment on a case transition, in bytes of UTF-8 (`serve --max-comment-size`, default 4 KiB).
    public var maxCommentBytes: Int

    public static let defaultMaxLinkLifetime: TimeInterval = 300
    public static let defaultRateLimitPerMinute = 60
    public static let defaultMaxCommentBytes = 4 * 1024

    public init(strictPermissions: Bool = false, maxLinkLifetime: TimeInterval = defaultMaxLinkLifetime,
                rateLimitPerMinute: Int = defaultRateLimitPerMinute, maxCommentBytes: Int = defaultMaxCommentBytes) {
        self.strictPermissions = strictPermissions
        self.maxLinkLifetime = maxLinkLifetime
        self.rateLimitPerMinute = rateLimitPerMinute
        self.maxCommentBytes = maxCommentBytes
    }
}

public struct UploadLimits: Sendable {
    /// Largest upload accepted (`Tus-Max-Size`); nil means no limit, as the handbook promises.
    public var maxUploadSize: Int64?
    /// Free space kept in reserve on the storage filesystem; creations that would eat into it get 507.
    public var minFreeBytes: Int64
    /// An unfinished upload without progress for this long expires (tus expiration): 410, blob reclaimed.
    public var uploadExpiry: TimeInterval
    /// A request body slower than this (bytes/s) over `stallWindow` is cut off, keeping what it verified.
    /// An idle timer alone would not do: a trickle of tiny body parts resets it forever.
    public var minReceiveRate: Double
    public var stallWindow: TimeInterval
    /// Unfinished uploads one user may have at once (`serve --max-unfinished-uploads-per-user`); more: 429.
    public var maxUnfinishedUploadsPerUser: Int
    /// Unfinished uploads one case may have at once (`serve --max-unfinished-uploads-per-case`); more: 429.
    public var maxUnfinishedUploadsPerCase: Int
    /// Bytes one case may hold, declared (unfinished uploads) plus stored (attachments) (`serve --max-case-size`);
    /// more: 413.
    public var maxCaseBytes: Int64
    /// A compressed request body may expand to at most this many decoded bytes per encoded byte, past its
    /// first MiB (`serve --max-compression-ratio`); more: 413. Logs deflate ~10:1, zeros at most ~1032:1.
    public var maxCompressionRatio: Int

    public static let defaultMaxUnfinishedUploadsPerUser = 100
    public static let defaultMaxUnfinishedUploadsPerCase = 1_000
    public static let defaultMaxCaseBytes: Int64 = 1 << 40  // 1 TiB
    public static let defaultMaxCompressionRatio = 1_000

    public init(maxUploadSize: Int64? = nil, minFreeBytes: Int64 = 256 * 1024 * 1024,
                uploadExpiry: TimeInterval = 7 * 24 * 3600, minReceiveRate: Double = 1024,
                stallWindow: TimeInterval = 60,
                maxUnfinishedUploadsPerUser: Int = defaultMaxUnfinishedUploadsPerUser,
                maxUnfinishedUploadsPerCase: Int = defaultMaxUnfinishedUploadsPerCase,
                maxCaseBytes: Int64 = defaultMaxCaseBytes,
                maxCompressionRatio: Int = defaultMaxCompressionRatio) {
        self.maxCompressionRatio = maxCompressionRatio
        self.maxUnfinishedUploadsPerUser = maxUnfinishedUploadsPerUser
        self.maxUnfinishedUploadsPerCase = maxUnfinishedUploadsPerCase
        self.maxCaseBytes = maxCaseBytes
        self.maxUploadSize = maxUploadSize
        self.minFreeBytes = minFreeBytes
        self.uploadExpiry = uploadExpiry
        self.minReceiveRate = minReceiveRate
        self.stallWindow = stallWindow
    }
}

/// The application's worker threads: storage's (blocking calls, background writes) and the upload engine's
/// hashing lanes. Made by whoever opens the storage and handed down, never a static singleton.
public struct WorkerThreads: Sendable {
    public let storage: StorageThreads
    public let bulkWork: BulkWork

    public init(storage: StorageThreads = StorageThreads(), bulkWork: BulkWork = BulkWork()) {
        self.storage = storage
        self.bulkWork = bulkWork
    }
}
