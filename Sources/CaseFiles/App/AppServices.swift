import Foundation

/// What every controller and job shares, injected rather than global: storage, clock and limits.
public struct AppServices: Sendable {
    public let database: AppDatabase
    public let blobs: any BlobStore
    public let locks: UploadWriterLocks
    public let limits: UploadLimits
    /// The clock; tests move it.
    public let now: @Sendable () -> Date

    public init(database: AppDatabase, blobs: any BlobStore, limits: UploadLimits = .init(),
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.database = database
        self.blobs = blobs
        self.locks = UploadWriterLocks()
        self.limits = limits
        self.now = now
    }

    /// Opens the storage root: `casefiles.sqlite` (WAL) and `blobs/`.
    public static func open(storage root: URL, limits: UploadLimits = .init(),
                            now: @escaping @Sendable () -> Date = { Date() }) throws -> AppServices {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let database = try AppDatabase.open(path: root.appendingPathComponent("casefiles.sqlite").path)
        return AppServices(database: database, blobs: try FileBlobStore(root: root), limits: limits, now: now)
    }

    /// Removes blobs no upload owns (a crash between creating a file and inserting its row, or a
    /// failed or terminated upload whose removal was interrupted). Run before serving.
    @discardableResult
    public func sweepOrphanBlobs() throws -> [String] {
        let live = try database.idsWithLiveBlobs()
        let orphans = try blobs.storedIDs().filter { !live.contains($0) }
        for id in orphans { try blobs.remove(id: id) }
        return orphans
    }
}

public struct UploadLimits: Sendable {
    /// Largest upload accepted (`Tus-Max-Size`); nil means no limit, as the handbook promises.
    public var maxUploadSize: Int64?
    /// Free space kept in reserve on the storage filesystem; creations that would eat into it get 507.
    public var minFreeBytes: Int64
    /// An unfinished upload without progress for this long expires (tus expiration): 410, blob reclaimed.
    public var uploadExpiry: TimeInterval

    public init(maxUploadSize: Int64? = nil, minFreeBytes: Int64 = 256 * 1024 * 1024,
                uploadExpiry: TimeInterval = 7 * 24 * 3600) {
        self.maxUploadSize = maxUploadSize
        self.minFreeBytes = minFreeBytes
        self.uploadExpiry = uploadExpiry
    }
}
