import Foundation

// The index of an archive attachment ("bundle"): what `CaseFilesBundles` finds in one streaming pass over the
// verified blob, what `MetadataStore` keeps, and what the entries API lists. Plain values, no I/O.

/// Where an attachment's index stands (`GET /api/v1/attachments/{id}/entries` says it as `state`).
public enum BundleIndexState: String, Codable, Sendable {
    /// Not indexed yet (the background indexer has not reached it).
    case pending
    /// Indexed; `truncated` says whether the index stopped early (a cap, a bomb, a truncated or corrupt archive).
    case ready
    /// Not an archive format the service recognises.
    case notAnArchive = "not_an_archive"
    /// A recognised container the service cannot read (`reason` says why, e.g. xz compression).
    case unreadable
}

/// The container formats the indexer reads.
public enum BundleFormat: String, Codable, Sendable {
    case zip
    case tar
    /// A tar inside gzip (`.tar.gz`, `.tgz`): offsets of entries are in the decompressed stream.
    case tarGzip = "tar.gz"
    /// Plain gzip of one file: one entry.
    case gzip
}

/// The kind of an entry, as the container records it (tar typeflag, zip external attributes).
public enum BundleEntryType: String, Codable, Sendable {
    case file, directory, symlink, hardlink, other
}

/// The bounds of one index (README, "Bundles"): an archive never costs more than these, whatever it contains.
public struct BundleLimits: Sendable, Equatable {
    /// Entries indexed at most; past it the index is marked truncated (a million empty entries stop here).
    public var maxEntries: Int
    /// Decompressed bytes between two gzip checkpoints at first; doubled whenever the checkpoint count would
    /// pass `maxCheckpoints` (every other checkpoint is dropped), so the spacing follows the archive's size.
    public var checkpointSpacing: Int64
    /// Checkpoints kept at most per archive; each holds a 32 KiB window, deflated.
    public var maxCheckpoints: Int
    /// An entry (zip) or a gzip stream may inflate to at most `maxExpansionRatio` times its compressed bytes
    /// plus `expansionAllowance`; past that it is reported as a bomb and never inflated further.
    public var maxExpansionRatio: Int64
    public var expansionAllowance: Int64
    /// Longest entry path and longest GNU long-name / pax record kept in memory, in bytes.
    public var maxPathBytes: Int
    public var maxExtendedHeaderBytes: Int

    public init(maxEntries: Int = 100_000, checkpointSpacing: Int64 = 4 << 20, maxCheckpoints: Int = 1_024,
                maxExpansionRatio: Int64 = 200, expansionAllowance: Int64 = 1 << 20,
                maxPathBytes: Int = 4_096, maxExtendedHeaderBytes: Int = 1 << 20) {
        self.maxEntries = maxEntries
        self.checkpointSpacing = checkpointSpacing
        self.maxCheckpoints = maxCheckpoints
        self.maxExpansionRatio = maxExpansionRatio
        self.expansionAllowance = expansionAllowance
        self.maxPathBytes = maxPathBytes
        self.maxExtendedHeaderBytes = maxExtendedHeaderBytes
    }

    /// Whether `output` decompressed bytes from `input` compressed ones exceed the expansion bound.
    public func exceedsExpansion(output: Int64, input: Int64) -> Bool {
        output > input * maxExpansionRatio + expansionAllowance
    }
}

/// One entry of an archive. `number` (from 1, in container order) identifies it: tar allows duplicate paths.
public struct BundleEntry: Codable, Sendable, Equatable {
    public var attachmentID: String
    public var number: Int
    /// As the container spells it, never normalised (`../x` and `/etc/x` are listed as they are, with `flags`).
    public var path: String
    /// Uncompressed size in bytes.
    public var size: Int64
    public var modifiedAt: Date?
    public var type: BundleEntryType
    /// A link's target, as recorded; never followed.
    public var linkTarget: String?
    /// Where the entry's data starts: in the container (tar, zip: the byte after the local header), or in the
    /// decompressed stream (tar.gz, gzip).
    public var dataOffset: Int64
    /// Zip only: compressed bytes and the method (0 stored, 8 deflate).
    public var compressedSize: Int64?
    public var method: Int?
    /// Nil when the entry can be read; else why not (an unsupported method, encryption, a bomb, a cut archive).
    public var problem: String?
    /// Lowercase hex SHA-256 of the entry's bytes, computed while indexing; nil when not computed (`problem`).
    public var sha256: String?
    /// Warnings about the entry itself: `absolute_path`, `parent_path` (a `..` component), `duplicate_path`.
    public var flags: [String]

    public var readable: Bool { problem == nil && (type == .file) }

    public init(attachmentID: String, number: Int, path: String, size: Int64, modifiedAt: Date?, type: BundleEntryType,
                linkTarget: String? = nil, dataOffset: Int64, compressedSize: Int64? = nil, method: Int? = nil,
                problem: String? = nil, sha256: String? = nil, flags: [String] = []) {
        self.attachmentID = attachmentID
        self.number = number
        self.path = path
        self.size = size
        self.modifiedAt = modifiedAt
        self.type = type
        self.linkTarget = linkTarget
        self.dataOffset = dataOffset
        self.compressedSize = compressedSize
        self.method = method
        self.problem = problem
        self.sha256 = sha256
        self.flags = flags
    }

    /// The path warnings of `path` (duplicates are found by the indexer, which knows the other paths).
    public static func pathFlags(_ path: String) -> [String] {
        var flags: [String] = []
        if path.hasPrefix("/") || path.hasPrefix("\\") { flags.append("absolute_path") }
        if path.split(whereSeparator: { $0 == "/" || $0 == "\\" }).contains("..") { flags.append("parent_path") }
        return flags
    }
}

/// A place to restart inflating a gzip stream (zlib's zran.c): at a deflate block boundary, the compressed
/// position (`inputOffset` bytes, minus `bits` bits of the byte before it still unused) and the 32 KiB of
/// output before `outputOffset` (the window), kept deflated.
public struct BundleCheckpoint: Codable, Sendable, Equatable {
    public var attachmentID: String
    public var number: Int
    public var outputOffset: Int64
    public var inputOffset: Int64
    public var bits: Int
    /// The window (up to 32 KiB), compressed with zlib `compress2`.
    public var window: Data

    public init(attachmentID: String, number: Int, outputOffset: Int64, inputOffset: Int64, bits: Int, window: Data) {
        self.attachmentID = attachmentID
        self.number = number
        self.outputOffset = outputOffset
        self.inputOffset = inputOffset
        self.bits = bits
        self.window = window
    }
}

/// An attachment's index as a whole.
public struct BundleIndex: Codable, Sendable, Equatable {
    public var attachmentID: String
    public var state: BundleIndexState
    public var format: BundleFormat?
    /// Why `unreadable`, or why a `ready` index is `truncated`.
    public var reason: String?
    public var entryCount: Int
    /// Whether the index stopped before the archive's end; `stoppedAt` is the offset (in the container, or
    /// in the decompressed stream for gzip) where it stopped.
    public var truncated: Bool
    public var stoppedAt: Int64?
    /// The decompressed bytes between checkpoints in the end (gzip formats), for a reader's inflate bound.
    public var checkpointSpacing: Int64?
    /// What the index costs in the database, in bytes (counted toward the case's quota).
    public var indexBytes: Int64
    public var updatedAt: Date

    public init(attachmentID: String, state: BundleIndexState, format: BundleFormat? = nil, reason: String? = nil,
                entryCount: Int = 0, truncated: Bool = false, stoppedAt: Int64? = nil, checkpointSpacing: Int64? = nil,
                indexBytes: Int64 = 0, updatedAt: Date) {
        self.attachmentID = attachmentID
        self.state = state
        self.format = format
        self.reason = reason
        self.entryCount = entryCount
        self.truncated = truncated
        self.stoppedAt = stoppedAt
        self.checkpointSpacing = checkpointSpacing
        self.indexBytes = indexBytes
        self.updatedAt = updatedAt
    }
}
