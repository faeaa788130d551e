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

    /// Removes blobs no live upload owns: files of failed, terminated, expired or purged uploads whose
    /// removal was interrupted, and files with no row at all (a crash between creating a file and
    /// inserting its row). A file with no row may also be an upload being created right now, so while
    /// the server may be running only such files older than `unknownOlderThan` seconds are removed.
    @discardableResult
    public func sweepOrphanBlobs(unknownOlderThan minimumAge: TimeInterval = 0) throws -> [String] {
        let states = try database.uploadStates()
        var removed: [String] = []
        for id in try blobs.storedIDs() {
            switch states[id] {
            case .uploading?, .verified?:
                continue
            case nil:
                guard let modified = blobs.lastModified(id: id), Date().timeIntervalSince(modified) >= minimumAge else { continue }
            default:
                break
            }
            try blobs.remove(id: id)
            removed.append(id)
        }
        return removed
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

    public init(maxUploadSize: Int64? = nil, minFreeBytes: Int64 = 256 * 1024 * 1024,
                uploadExpiry: TimeInterval = 7 * 24 * 3600, minReceiveRate: Double = 1024,
                stallWindow: TimeInterval = 60) {
        self.maxUploadSize = maxUploadSize
        self.minFreeBytes = minFreeBytes
        self.uploadExpiry = uploadExpiry
        self.minReceiveRate = minReceiveRate
        self.stallWindow = stallWindow
    }
}
