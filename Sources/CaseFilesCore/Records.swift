import Foundation

// Records are plain Codable structs; their table mapping (CaseFilesDatabase, Records+GRDB.swift) and the
// schema with its invariants (AppDatabase) live in the database target.

public enum Role: String, Codable, Sendable, CaseIterable {
    case customer, engineer, admin
}

public struct User: Codable, Sendable, Equatable {
    public var id: Int64?
    public var name: String
    public var role: Role
    /// The customer's organisation; nil for engineers and admins, who work across accounts.
    public var account: String?
    /// SHA-256 (hex) of the bearer token; the token itself is never stored.
    public var tokenHash: String
    public var createdAt: Date
    public var revokedAt: Date?


    public init(id: Int64? = nil, name: String, role: Role, account: String?, tokenHash: String,
                createdAt: Date, revokedAt: Date? = nil) {
        self.id = id
        self.name = name
        self.role = role
        self.account = account
        self.tokenHash = tokenHash
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// The handbook's case states ("Case States and Statuses") with their sub-statuses.
public enum CaseStatus: String, Codable, Sendable, CaseIterable {
    case open = "Open"
    case awaitingInfo = "Awaiting Info"
    case solutionProposed = "Solution Proposed"
    case closed = "Closed"

    public var subStatuses: [String] {
        switch self {
        case .open: ["New", "Investigation", "Customer Responded", "Engineering Request", "3rd Party Pending"]
        case .awaitingInfo: ["Info required from the customer"]
        case .solutionProposed: ["Fixed-Software Provided", "Replied"]
        case .closed: ["Resolved", "Cancelled", "Logged for Future Fix", "Redirected", "Customer requested to re-open"]
        }
    }
}

public enum CasePriority: String, Codable, Sendable, CaseIterable {
    case prodDown = "Prod Down"
    case high = "High"
    case medium = "Medium"
    case low = "Low"
}

public enum RequestType: String, Codable, Sendable, CaseIterable {
    case support = "Support"
    case admin = "Admin"
    case license = "License"
}

public struct SupportCase: Codable, Sendable, Equatable {
    /// Eight digits, zero-padded ("00001413").
    public var number: String
    public var account: String
    public var subject: String
    public var requestType: RequestType
    public var priority: CasePriority
    public var status: CaseStatus
    public var subStatus: String
    public var openedAt: Date
    public var closedAt: Date?
    public var updatedAt: Date
    /// An admin's legal hold: a held case is never purged.
    public var legalHold: Bool = false
    /// When the retention policy purged the case's data; after that it cannot be reopened.
    public var purgedAt: Date?


    public var isClosed: Bool { status == .closed }

    public init(number: String, account: String, subject: String, requestType: RequestType, priority: CasePriority, status: CaseStatus, subStatus: String, openedAt: Date, closedAt: Date? = nil, updatedAt: Date, legalHold: Bool = false, purgedAt: Date? = nil) {
        self.number = number
        self.account = account
        self.subject = subject
        self.requestType = requestType
        self.priority = priority
        self.status = status
        self.subStatus = subStatus
        self.openedAt = openedAt
        self.closedAt = closedAt
        self.updatedAt = updatedAt
        self.legalHold = legalHold
        self.purgedAt = purgedAt
    }
}

public enum UploadState: String, Codable, Sendable {
    /// Bytes are still arriving.
    case uploading
    /// Complete and its SHA-256 verified (or recorded): an attachment of the case.
    case verified
    /// Complete, but the whole-file SHA-256 did not match the declared one. Never served.
    case failed
    /// Deleted by a client (tus termination).
    case terminated
    /// Unfinished and without progress for longer than the upload expiry (tus expiration); blob reclaimed.
    case expired
    /// Removed by the retention policy; the row stays as a tombstone.
    case purged

    /// The states whose upload owns a blob on disk: bytes still arriving, or a verified attachment. Every other
    /// state's blob is gone or going (removed right after its transition; the orphan sweep removes what a crash
    /// left). The one statement of that rule: the orphan sweep, the purge candidates and the purge's tombstone
    /// transaction all read it.
    public static let blobOwners: [UploadState] = [.uploading, .verified]

    /// Whether an upload in this state owns a blob (`blobOwners`).
    public var ownsBlob: Bool { Self.blobOwners.contains(self) }
}

/// One tus upload; once `verified` it is an attachment of its case (same id).
public struct Upload: Codable, Sendable, Equatable {
    public var id: String
    public var caseNumber: String
    public var filename: String
    public var filetype: String?
    /// `Upload-Metadata` exactly as the client sent it, echoed on HEAD (tus core).
    public var rawMetadata: String
    /// nil while the length is deferred (creation-defer-length).
    public var length: Int64?
    /// The last durable, verified byte count.
    public var offset: Int64
    public var state: UploadState
    /// The whole file's SHA-256 the client declared (hex), if any.
    public var declaredSHA256: String?
    /// OpenSSL SHA256_CTX over bytes [0, offset): resumes the whole-file digest without re-reading.
    public var digestState: Data
    /// The whole file's SHA-256 (hex), set when complete.
    public var sha256: String?
    /// The user accountable for the upload: its creator, or the engineer whose drop credential created it.
    public var createdBy: Int64
    public var createdAt: Date
    public var updatedAt: Date
    public var completedAt: Date?
    public var purgedAt: Date?
    /// The drop credential that created it (issue #20), which alone may append to it; nil: created by `createdBy`
    /// with their own token.
    public var createdByDropToken: Int64? = nil
    /// Its part in a tus concatenation (`UploadConcat`), nil for an ordinary upload. A final upload's `offset` and
    /// `digestState` are its verification's progress over its partials, in order; it has no blob of its own.
    public var concat: UploadConcat?


    public var isComplete: Bool { length.map { offset == $0 } ?? false }

    public init(id: String, caseNumber: String, filename: String, filetype: String? = nil, rawMetadata: String, length: Int64? = nil, offset: Int64, state: UploadState, declaredSHA256: String? = nil, digestState: Data, sha256: String? = nil, createdBy: Int64, createdAt: Date, updatedAt: Date, completedAt: Date? = nil, purgedAt: Date? = nil, concat: UploadConcat? = nil, createdByDropToken: Int64? = nil) {
        self.concat = concat
        self.createdByDropToken = createdByDropToken
        self.id = id
        self.caseNumber = caseNumber
        self.filename = filename
        self.filetype = filetype
        self.rawMetadata = rawMetadata
        self.length = length
        self.offset = offset
        self.state = state
        self.declaredSHA256 = declaredSHA256
        self.digestState = digestState
        self.sha256 = sha256
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.completedAt = completedAt
        self.purgedAt = purgedAt
    }
}

/// One entry of a case's history: every transition, hold and purge, with who and when.
public struct CaseEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case opened, status, closed, reopened, hold, release, purged
    }

    public var id: Int64?
    public var caseNumber: String
    public var kind: Kind
    /// The status and sub-status after the event.
    public var status: CaseStatus
    public var subStatus: String
    /// A user name, or `cli:<login>` for operator commands, or `retention` for the purge.
    public var actor: String
    public var comment: String?
    public var at: Date


    public init(id: Int64? = nil, caseNumber: String, kind: Kind, status: CaseStatus, subStatus: String, actor: String, comment: String? = nil, at: Date) {
        self.id = id
        self.caseNumber = caseNumber
        self.kind = kind
        self.status = status
        self.subStatus = subStatus
        self.actor = actor
        self.comment = comment
        self.at = at
    }
}

/// One run of the retention purge, kept even after what it purged is gone (the audit log).
public struct PurgeRun: Codable, Sendable, Equatable {
    /// What started a run.
    public enum Trigger: String, Codable, Sendable {
        /// The scheduled service inside `serve`.
        case schedule
        /// `casefiles purge`.
        case cli
    }

    /// A run's state; the stored values are the raw values (the `purgeRun.state` CHECK).
    public enum State: String, Codable, Sendable {
        /// Started and not yet finished; found so by a later run, it was killed.
        case running
        case finished
        /// Marked by a later run, with the totals of the items the killed run recorded.
        case interrupted
    }

    public var id: Int64?
    public var startedAt: Date
    public var finishedAt: Date?
    public var asOf: Date
    public var retentionDays: Int
    public var trigger: Trigger
    /// `running` until finished; a run found `running` by a later one was killed and is marked `interrupted`.
    public var state: State
    public var casesPurged: Int
    public var itemsPurged: Int
    public var bytesFreed: Int64
    public var casesSkippedForHold: Int
    public var itemsSkippedForHold: Int
    public var errors: String?


    public init(id: Int64? = nil, startedAt: Date, finishedAt: Date? = nil, asOf: Date, retentionDays: Int, trigger: Trigger, state: State, casesPurged: Int, itemsPurged: Int, bytesFreed: Int64, casesSkippedForHold: Int, itemsSkippedForHold: Int, errors: String? = nil) {
        self.id = id
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.asOf = asOf
        self.retentionDays = retentionDays
        self.trigger = trigger
        self.state = state
        self.casesPurged = casesPurged
        self.itemsPurged = itemsPurged
        self.bytesFreed = bytesFreed
        self.casesSkippedForHold = casesSkippedForHold
        self.itemsSkippedForHold = itemsSkippedForHold
        self.errors = errors
    }
}

/// One attachment or unfinished upload removed by a purge run.
public struct PurgeItem: Codable, Sendable, Equatable {
    public var id: Int64?
    public var runID: Int64
    public var caseNumber: String
    public var uploadID: String
    public var filename: String
    public var previousState: UploadState
    public var bytes: Int64
    public var at: Date


    public init(id: Int64? = nil, runID: Int64, caseNumber: String, uploadID: String, filename: String, previousState: UploadState, bytes: Int64, at: Date) {
        self.id = id
        self.runID = runID
        self.caseNumber = caseNumber
        self.uploadID = uploadID
        self.filename = filename
        self.previousState = previousState
        self.bytes = bytes
        self.at = at
    }
}

/// One download of an attachment: who, what, when, how much (the access log admins read).
public struct Download: Codable, Sendable, Equatable {
    public var id: Int64?
    public var uploadID: String
    public var userID: Int64
    public var startedAt: Date
    public var finishedAt: Date
    public var bytesSent: Int64
    /// The `Range` header as sent, if any.
    public var range: String?
    public var status: Int
    /// Whether every byte of the response was written.
    public var completed: Bool
    /// The archive entry downloaded (`GET …/entries/{path}`), nil for the whole attachment.
    public var entryPath: String?

    public init(id: Int64? = nil, uploadID: String, userID: Int64, startedAt: Date, finishedAt: Date, bytesSent: Int64, range: String? = nil, status: Int, completed: Bool, entryPath: String? = nil) {
        self.entryPath = entryPath
        self.id = id
        self.uploadID = uploadID
        self.userID = userID
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.bytesSent = bytesSent
        self.range = range
        self.status = status
        self.completed = completed
    }
}

/// One line of the download access log: a `Download` with the names an admin reads.
public struct DownloadEntry: Codable, Sendable, Equatable {
    public var id: Int64
    public var attachmentID: String
    public var caseNumber: String
    public var filename: String
    public var user: String
    public var startedAt: Date
    public var finishedAt: Date
    public var bytesSent: Int64
    public var range: String?
    public var status: Int
    public var completed: Bool
    /// The archive entry downloaded, nil for the whole attachment.
    public var entryPath: String?

    public init(id: Int64, attachmentID: String, caseNumber: String, filename: String, user: String, startedAt: Date,
                finishedAt: Date, bytesSent: Int64, range: String?, status: Int, completed: Bool, entryPath: String? = nil) {
        self.entryPath = entryPath
        self.id = id
        self.attachmentID = attachmentID
        self.caseNumber = caseNumber
        self.filename = filename
        self.user = user
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.bytesSent = bytesSent
        self.range = range
        self.status = status
        self.completed = completed
    }
}

/// A signed download link as issued. The row, not the URL, is the authority on whom the link serves, until
/// when, and how many bytes it has served: a URL signed with a leaked key cannot outlast its row.
public struct DownloadLink: Codable, Sendable, Equatable {
    public var nonce: String
    public var uploadID: String
    public var userID: Int64
    public var expiresAt: Date
    /// Nil for links issued before the v5 migration.
    public var issuedAt: Date?
    /// Bytes sent through this link, plus those of responses still being sent (charged before sending,
    /// the unsent part refunded when the response ends).
    public var bytesServed: Int64


    public init(nonce: String, uploadID: String, userID: Int64, expiresAt: Date, issuedAt: Date?, bytesServed: Int64 = 0) {
        self.nonce = nonce
        self.uploadID = uploadID
        self.userID = userID
        self.expiresAt = expiresAt
        self.issuedAt = issuedAt
        self.bytesServed = bytesServed
    }
}
