import Foundation

/// A per-case drop credential (issue #20): a secret an engineer hands a customer so that plain tools (`curl -T`,
/// `curl.exe`) can upload into one case, and do nothing else. Only its SHA-256 is stored (as `User.tokenHash`).
public struct DropToken: Codable, Sendable, Equatable {
    public var id: Int64?
    /// The one case it uploads into (eight digits).
    public var caseNumber: String
    /// SHA-256 (hex) of the secret (`DropToken.hash`); the secret itself is shown once, at creation.
    public var tokenHash: String
    /// The engineer or admin who made it; the uploads it makes are created on their behalf (`Upload.createdBy`).
    public var createdBy: Int64
    public var createdAt: Date
    public var expiresAt: Date
    public var revokedAt: Date?
    /// When it last authenticated a request, to the minute (`DropToken.lastUsedGranularity`); nil: never used.
    public var lastUsedAt: Date?

    public init(id: Int64? = nil, caseNumber: String, tokenHash: String, createdBy: Int64, createdAt: Date,
                expiresAt: Date, revokedAt: Date? = nil, lastUsedAt: Date? = nil) {
        self.id = id
        self.caseNumber = caseNumber
        self.tokenHash = tokenHash
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
    }

    /// Secrets start with `cfd_` (user tokens with `cf_`): a leaked one is recognisable, and a bearer token is
    /// looked up in the right table without trying both.
    public static let prefix = "cfd_"

    /// How long a drop credential lives unless asked otherwise: 14 days, in seconds.
    public static let defaultLifetime: TimeInterval = 14 * 86_400
    /// The longest lifetime that may be asked for: 90 days, in seconds (a case that needs more gets a new one).
    public static let maxLifetime: TimeInterval = 90 * 86_400
    /// `lastUsedAt` is written at most once a minute per credential, so an upload's many requests do not each
    /// cost a database write.
    public static let lastUsedGranularity: TimeInterval = 60

    /// A new secret: 32 random bytes, base64url, after `prefix`.
    public static func generate() -> String {
        prefix + String(AccessToken.generate().dropFirst("cf_".count))
    }

    public static func hash(_ secret: String) -> String { AccessToken.hash(secret) }

    public static func isDropToken(_ secret: String) -> Bool { secret.hasPrefix(prefix) }

    /// Whether it authenticates a request at `now`: not revoked, not expired, and its case not Closed (closure
    /// revokes it too, `MetadataStore.transitionCase`; this check holds even for a row closed before that rule).
    public func isUsable(at now: Date, caseIsClosed: Bool) -> Bool {
        revokedAt == nil && now < expiresAt && !caseIsClosed
    }

    /// What the listing shows.
    public enum State: String, Codable, Sendable { case active, expired, revoked }

    public func state(at now: Date) -> State {
        if revokedAt != nil { return .revoked }
        return now < expiresAt ? .active : .expired
    }
}

/// Who creates an upload and sends its bytes: a user with their own token, or a drop credential (issue #20), which
/// acts on behalf of the engineer who made it but is an author of its own: the "only the creator appends" rule
/// tells them apart, so neither that engineer nor another credential can append to its uploads.
public enum Uploader: Sendable, Equatable {
    case user(User)
    case dropCredential(DropToken)

    /// The user accountable for the uploads (`Upload.createdBy`): the user, or the credential's creator. The
    /// per-user quota counts against them.
    public var accountableUserID: Int64 {
        switch self {
        case .user(let user): user.id!
        case .dropCredential(let token): token.createdBy
        }
    }

    /// The credential named as an upload's creator (`Upload.createdByDropToken`); nil for a user.
    public var dropTokenID: Int64? {
        switch self {
        case .user: nil
        case .dropCredential(let token): token.id
        }
    }

    /// Whether this uploader created `upload` (and so may append to it).
    public func created(_ upload: Upload) -> Bool {
        upload.createdBy == accountableUserID && upload.createdByDropToken == dropTokenID
    }

    /// The permission table's answer for this uploader (`AccessPolicy`).
    public func decide(caseNumber: String, caseAccount: String, action: AccessPolicy.Action) -> AccessPolicy.Decision {
        switch self {
        case .user(let user): AccessPolicy.decide(user: user, caseAccount: caseAccount, action: action)
        case .dropCredential(let token):
            AccessPolicy.decide(dropCredentialFor: token.caseNumber, caseNumber: caseNumber, action: action)
        }
    }
}
