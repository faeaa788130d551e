import Foundation

/// An event for the case system, kept in the outbox (`outboxEvent`) from the transaction that made the state
/// change until every webhook has taken it. `body` is the JSON sent, byte for byte, and what the signature covers.
public struct OutboundEvent: Codable, Sendable, Equatable {
    /// The event types.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// An upload completed and its SHA-256 was verified: it is an attachment of its case.
        case attachmentVerified = "attachment.verified"
        /// An upload will never complete: its whole-file SHA-256 was not the declared one (`sha256_mismatch`),
        /// or it expired without progress (`expired`).
        case uploadFailed = "upload.failed"
        /// The retention purge removed a case's attached data.
        case casePurged = "case.purged"
        /// A drop credential (issue #20) was used for the first time: the customer has started sending.
        case dropCredentialFirstUsed = "drop_credential.first_used"
    }

    public enum State: String, Codable, Sendable, CaseIterable {
        /// Not yet taken by every webhook; retried with backoff.
        case pending
        /// Every webhook answered 2xx.
        case delivered
        /// Still refused after `WebhookRetry.deliveryWindow`: no more attempts.
        case dead
    }

    /// `evt_` + 32 hex digits: the receiver's idempotency key (a retry sends the same id).
    public var id: String
    public var type: Kind
    public var body: String
    public var createdAt: Date
    public var state: State
    public var attempts: Int
    public var nextAttemptAt: Date
    /// The last refusal (an HTTP status or a connection error) of the last attempt, for `casefiles events list`.
    public var lastError: String?
    /// The webhook URLs that answered 2xx, one a line: a retry goes only to the others.
    public var deliveredTo: String
    /// When it became delivered or dead.
    public var finishedAt: Date?

    public init(id: String, type: Kind, body: String, createdAt: Date, state: State = .pending, attempts: Int = 0,
                nextAttemptAt: Date, lastError: String? = nil, deliveredTo: String = "", finishedAt: Date? = nil) {
        self.id = id
        self.type = type
        self.body = body
        self.createdAt = createdAt
        self.state = state
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
        self.deliveredTo = deliveredTo
        self.finishedAt = finishedAt
    }

    /// What an event says; absent fields are left out of the JSON.
    public struct Payload: Codable, Sendable, Equatable {
        public var caseNumber: String
        public var uploadID: String?
        public var filename: String?
        /// Bytes.
        public var length: Int64?
        /// The stored file's SHA-256 (hex).
        public var sha256: String?
        /// The SHA-256 the client declared (hex), for `sha256_mismatch`.
        public var declaredSHA256: String?
        /// `sha256_mismatch` or `expired` (`upload.failed`).
        public var reason: String?
        /// The retention policy that purged the case (`case.purged`).
        public var policy: String?
        public var itemsPurged: Int?
        /// Bytes.
        public var bytesPurged: Int64?
        /// The drop credential's id (`drop_credential.first_used`); never its secret.
        public var dropCredentialID: Int64?

        public init(caseNumber: String, uploadID: String? = nil, filename: String? = nil, length: Int64? = nil,
                    sha256: String? = nil, declaredSHA256: String? = nil, reason: String? = nil, policy: String? = nil,
                    itemsPurged: Int? = nil, bytesPurged: Int64? = nil, dropCredentialID: Int64? = nil) {
            self.dropCredentialID = dropCredentialID
            self.caseNumber = caseNumber
            self.uploadID = uploadID
            self.filename = filename
            self.length = length
            self.sha256 = sha256
            self.declaredSHA256 = declaredSHA256
            self.reason = reason
            self.policy = policy
            self.itemsPurged = itemsPurged
            self.bytesPurged = bytesPurged
        }
    }

    private struct Envelope: Encodable {
        var id: String
        var type: Kind
        var createdAt: Date
        var data: Payload
    }

    /// A new pending event, due at once: `{"createdAt", "data", "id", "type"}` with sorted keys.
    public static func make(_ type: Kind, _ data: Payload, at now: Date) -> OutboundEvent {
        let id = "evt_" + SecureRandom.identifier()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        // Encoding these plain fields cannot fail.
        let body = try! encoder.encode(Envelope(id: id, type: type, createdAt: now, data: data))
        return OutboundEvent(id: id, type: type, body: String(decoding: body, as: UTF8.self), createdAt: now,
                             nextAttemptAt: now)
    }
}

/// The webhook signature: `CaseFiles-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256>` over `"<t>.<body>"`
/// with the shared secret (the bytes of the secret file's text), the scheme Stripe uses: the timestamp inside the
/// signed text lets a receiver refuse replays older than a few minutes.
public enum WebhookSignature {
    public static let headerName = "CaseFiles-Signature"

    public static func header(body: String, timestamp: Int, secret: [UInt8]) -> String {
        "t=\(timestamp),v1=\(HMACSHA256.sign("\(timestamp).\(body)", key: secret).hexString)"
    }
}

/// When a refused event is tried again: exponential backoff, capped, for at most `deliveryWindow`.
public enum WebhookRetry {
    /// After this long since the event was made, a refused event becomes `dead` (seconds: 24 hours).
    public static let deliveryWindow: TimeInterval = 24 * 3600
    /// The longest wait between attempts (seconds: 1 hour).
    public static let maximumDelay: TimeInterval = 3600

    /// Seconds to wait after the `attempts`-th failed attempt (1, 2, ...): `base`, 2·base, 4·base, ... capped
    /// at `maximumDelay`.
    public static func delay(afterAttempt attempts: Int, base: TimeInterval) -> TimeInterval {
        min(base * pow(2, Double(max(attempts - 1, 0))), maximumDelay)
    }

    /// Whether an event made at `createdAt` is past retrying at `now`.
    public static func isPastWindow(createdAt: Date, at now: Date) -> Bool {
        now.timeIntervalSince(createdAt) >= deliveryWindow
    }
}
