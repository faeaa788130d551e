import Foundation
import GRDB
import CaseFilesCore

/// Owns the SQLite database: its schema (named migrations, appended and never edited) and every
/// query the service makes, each one transaction with an intention-revealing name.
public struct AppDatabase: Sendable {
    public let writer: any DatabaseWriter
    /// Connections for synchronous reads only. An asynchronous read keeps its pooled connection until its
    /// task resumes on an executor thread (an event loop in `serve`), so a synchronous read waiting on
    /// those threads for the same pool can block them all while every connection waits for them: the
    /// server once hung so under 48 clients. These connections are never held across a suspension, so
    /// waiting for one costs at most a query.
    private let syncReader: any DatabaseReader

    /// - Parameter moveLinkSigningKey: receives a link-signing key found in the database (kept there before the
    ///   v5 migration) and must store it durably elsewhere before the migration deletes it.
    public init(_ writer: any DatabaseWriter, moveLinkSigningKey: @escaping @Sendable ([UInt8]) throws -> Void) throws {
        try Self.migrator(moveLinkSigningKey: moveLinkSigningKey).migrate(writer)
        self.init(migrated: writer, syncReader: writer)
    }

    private init(migrated writer: any DatabaseWriter, syncReader: any DatabaseReader) {
        self.writer = writer
        self.syncReader = syncReader
    }

    /// Opens (creating if needed) the database file in WAL mode, so CLI commands can run while `serve` does.
    /// - Parameter moveLinkSigningKey: see `init(_:moveLinkSigningKey:)`.
    public static func open(path: String, moveLinkSigningKey: @escaping @Sendable ([UInt8]) throws -> Void) throws -> AppDatabase {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let writer = try DatabasePool(path: path, configuration: config)
        try migrator(moveLinkSigningKey: moveLinkSigningKey).migrate(writer)  // before the read-only pool opens: it cannot create the file
        var readOnly = config
        readOnly.readonly = true
        return AppDatabase(migrated: writer, syncReader: try DatabasePool(path: path, configuration: readOnly))
    }

    package static func migrator(moveLinkSigningKey: @escaping @Sendable ([UInt8]) throws -> Void) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: users, cases, uploads") { db in
            try db.create(table: "user") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("role", .text).notNull().check(sql: "role IN ('customer', 'engineer', 'admin')")
                t.column("account", .text)
                t.column("tokenHash", .text).notNull().unique()
                t.column("createdAt", .datetime).notNull()
                t.column("revokedAt", .datetime)
                t.check(sql: "role <> 'customer' OR account IS NOT NULL")
            }
            try db.create(table: "supportCase") { t in
                t.primaryKey("number", .text).check(sql: "length(number) = 8 AND number NOT GLOB '*[^0-9]*'")
                t.column("account", .text).notNull().indexed()
                t.column("subject", .text).notNull()
                t.column("requestType", .text).notNull().check(sql: "requestType IN ('Support', 'Admin', 'License')")
                t.column("priority", .text).notNull().check(sql: "priority IN ('Prod Down', 'High', 'Medium', 'Low')")
                t.column("status", .text).notNull()
                    .check(sql: "status IN ('Open', 'Awaiting Info', 'Solution Proposed', 'Closed')")
                t.column("subStatus", .text).notNull()
                t.column("openedAt", .datetime).notNull()
                t.column("closedAt", .datetime)
                t.column("updatedAt", .datetime).notNull()
                t.check(sql: "(status = 'Closed') = (closedAt IS NOT NULL)")
            }
            try db.create(table: "upload") { t in
                t.primaryKey("id", .text)
                t.column("caseNumber", .text).notNull().indexed().references("supportCase", onDelete: .restrict)
                t.column("filename", .text).notNull()
                t.column("filetype", .text)
                t.column("rawMetadata", .text).notNull()
                t.column("length", .integer).check(sql: "length IS NULL OR length >= 0")
                t.column("offset", .integer).notNull().check(sql: "offset >= 0 AND (length IS NULL OR offset <= length)")
                t.column("state", .text).notNull()
                    .check(sql: "state IN ('uploading', 'verified', 'failed', 'terminated')")
                t.column("declaredSHA256", .text)
                t.column("digestState", .blob).notNull()
                t.column("sha256", .text)
                t.column("createdBy", .integer).notNull().references("user", onDelete: .restrict)
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("completedAt", .datetime)
                t.check(sql: "state <> 'verified' OR (sha256 IS NOT NULL AND offset = length)")
            }
        }
        migrator.registerMigration("v2: expired and purged uploads, download access log") { db in
            // SQLite cannot change a CHECK constraint in place: rebuild the table (sqlite.org/lang_altertable.html §7).
            try db.create(table: "upload_v2") { t in
                t.primaryKey("id", .text)
                t.column("caseNumber", .text).notNull().references("supportCase", onDelete: .restrict)
                t.column("filename", .text).notNull()
                t.column("filetype", .text)
                t.column("rawMetadata", .text).notNull()
                t.column("length", .integer).check(sql: "length IS NULL OR length >= 0")
                t.column("offset", .integer).notNull().check(sql: "offset >= 0 AND (length IS NULL OR offset <= length)")
                t.column("state", .text).notNull()
                    .check(sql: "state IN ('uploading', 'verified', 'failed', 'terminated', 'expired', 'purged')")
                t.column("declaredSHA256", .text)
                t.column("digestState", .blob).notNull()
                t.column("sha256", .text)
                t.column("createdBy", .integer).notNull().references("user", onDelete: .restrict)
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("completedAt", .datetime)
                t.column("purgedAt", .datetime)
                t.check(sql: "state <> 'verified' OR (sha256 IS NOT NULL AND offset = length)")
            }
            try db.execute(sql: """
                INSERT INTO upload_v2 (id, caseNumber, filename, filetype, rawMetadata, length, offset, state,
                    declaredSHA256, digestState, sha256, createdBy, createdAt, updatedAt, completedAt)
                SELECT id, caseNumber, filename, filetype, rawMetadata, length, offset, state,
                    declaredSHA256, digestState, sha256, createdBy, createdAt, updatedAt, completedAt FROM upload
                """)
            try db.drop(table: "upload")
            try db.rename(table: "upload_v2", to: "upload")
            try db.create(index: "upload_on_caseNumber", on: "upload", columns: ["caseNumber"])
            try db.create(index: "upload_on_state_updatedAt", on: "upload", columns: ["state", "updatedAt"])

            try db.create(table: "download") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("uploadID", .text).notNull().indexed().references("upload", onDelete: .restrict)
                t.column("userID", .integer).notNull().references("user", onDelete: .restrict)
                t.column("startedAt", .datetime).notNull()
                t.column("finishedAt", .datetime).notNull()
                t.column("bytesSent", .integer).notNull().check(sql: "bytesSent >= 0")
                t.column("range", .text)
                t.column("status", .integer).notNull()
                t.column("completed", .boolean).notNull()
            }
        }
        migrator.registerMigration("v3: case history, legal hold, settings, purge audit log") { db in
            try db.alter(table: "supportCase") { t in
                t.add(column: "legalHold", .boolean).notNull().defaults(to: false)
                t.add(column: "purgedAt", .datetime)
            }
            try db.create(table: "caseEvent") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("caseNumber", .text).notNull().indexed().references("supportCase", onDelete: .restrict)
                t.column("kind", .text).notNull()
                    .check(sql: "kind IN ('opened', 'status', 'closed', 'reopened', 'hold', 'release', 'purged')")
                t.column("status", .text).notNull()
                t.column("subStatus", .text).notNull()
                t.column("actor", .text).notNull()
                t.column("comment", .text)
                t.column("at", .datetime).notNull()
            }
            try db.create(table: "setting") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
            try db.create(table: "purgeRun") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("startedAt", .datetime).notNull()
                t.column("finishedAt", .datetime)
                t.column("asOf", .datetime).notNull()
                t.column("retentionDays", .integer).notNull()
                t.column("trigger", .text).notNull()
                t.column("state", .text).notNull().check(sql: "state IN ('running', 'finished', 'interrupted')")
                t.column("casesPurged", .integer).notNull().defaults(to: 0)
                t.column("itemsPurged", .integer).notNull().defaults(to: 0)
                t.column("bytesFreed", .integer).notNull().defaults(to: 0)
                t.column("casesSkippedForHold", .integer).notNull().defaults(to: 0)
                t.column("itemsSkippedForHold", .integer).notNull().defaults(to: 0)
                t.column("errors", .text)
            }
            try db.create(table: "purgeItem") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("runID", .integer).notNull().indexed().references("purgeRun", onDelete: .restrict)
                t.column("caseNumber", .text).notNull()
                t.column("uploadID", .text).notNull().unique().references("upload", onDelete: .restrict)
                t.column("filename", .text).notNull()
                t.column("previousState", .text).notNull()
                t.column("bytes", .integer).notNull()
                t.column("at", .datetime).notNull()
            }
        }
        migrator.registerMigration("v4: signed download links") { db in
            try db.create(table: "downloadLink") { t in
                t.primaryKey("nonce", .text)
                t.column("uploadID", .text).notNull().references("upload", onDelete: .restrict)
                t.column("userID", .integer).notNull().references("user", onDelete: .restrict)
                t.column("expiresAt", .datetime).notNull()
                t.column("firstUsedAt", .datetime)
            }
        }
        migrator.registerMigration("v5: link-signing key out of the database, link byte budget") { db in
            // A copy of the database (a backup, a support bundle) must not be able to forge links: the key moves
            // to its own 0600 file. It is handed over (written and fsynced) before its row is deleted in this
            // transaction, so a crash in between leaves it in both places, never in neither. secure_delete
            // zeroes the freed bytes instead of leaving the key in a free page (sqlite.org/pragma.html#pragma_secure_delete).
            if let hex = try String.fetchOne(db, sql: "SELECT value FROM setting WHERE key = 'link-signing-key'"),
               let key = [UInt8](hex: hex, byteCount: LinkSigningKeys.byteCount) {
                try moveLinkSigningKey(key)
            }
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "DELETE FROM setting WHERE key = 'link-signing-key'")
            try db.execute(sql: "PRAGMA secure_delete = OFF")
            // firstUsedAt (one GET from byte 0 per link) is no longer used: a link now has a byte budget.
            try db.alter(table: "downloadLink") { t in
                t.add(column: "issuedAt", .datetime)
                t.add(column: "bytesServed", .integer).notNull().defaults(to: 0).check(sql: "bytesServed >= 0")
            }
        }
        return migrator
    }
}

// MARK: - Users

extension AppDatabase {
    public func createUser(_ user: User) throws -> User {
        try writer.write { db in
            var user = user
            try user.insert(db)
            user.id = db.lastInsertedRowID
            return user
        }
    }

    /// The active (not revoked) user holding a token with this hash.
    public func activeUser(tokenHash: String) async throws -> User? {
        try readInPlace { db in
            try User.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM user WHERE tokenHash = ? AND revokedAt IS NULL"),
                arguments: [tokenHash])
        }
    }

    /// Returns false when no active user has that name.
    public func revokeUser(named name: String, at date: Date) throws -> Bool {
        try writer.write { db in
            try User.filter(Column("name") == name && Column("revokedAt") == nil)
                .updateAll(db, Column("revokedAt").set(to: date)) > 0
        }
    }

    public func allUsers() throws -> [User] {
        try syncReader.read { db in try User.order(Column("name")).fetchAll(db) }
    }

    public func user(id: Int64) async throws -> User? {
        try await writer.read { db in try User.fetchOne(db, key: id) }
    }
}

// MARK: - Cases

extension AppDatabase {
    /// Inserts the case; with no number given, takes the next one after the highest in use.
    public func createCase(_ supportCase: SupportCase, numberGiven: Bool) throws -> SupportCase {
        try writer.write { db in
            var supportCase = supportCase
            if !numberGiven {
                let highest = try Int64.fetchOne(db, sql: "SELECT MAX(CAST(number AS INTEGER)) FROM supportCase") ?? 0
                supportCase.number = CaseNumber.format(highest + 1)
            }
            do {
                try supportCase.insert(db)
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY {
                throw CaseNumberTaken(number: supportCase.number)
            }
            return supportCase
        }
    }

    /// An upload and the case it belongs to, in one read: every upload and download request starts here.
    public func uploadWithCase(id: String) async throws -> (Upload, SupportCase)? {
        try readInPlace { db in
            guard let upload = try Upload.fetchOne(db.cachedStatement(sql: "SELECT * FROM upload WHERE id = ?"),
                                                   arguments: [id]),
                  let supportCase = try SupportCase.fetchOne(
                      db.cachedStatement(sql: "SELECT * FROM supportCase WHERE number = ?"),
                      arguments: [upload.caseNumber])
            else { return nil }
            return (upload, supportCase)
        }
    }

    /// A point lookup by key, run on the calling thread: it takes tens of microseconds, less than the two
    /// thread hops of an asynchronous read, which under load add milliseconds to every request. The
    /// lookups use cached statements: compiling their SQL on every request was half of a HEAD probe's
    /// server CPU (870 -> 360-450 us).
    private func readInPlace<T>(_ value: (Database) throws -> T) throws -> T {
        try syncReader.read(value)
    }

    public func supportCase(number: String) async throws -> SupportCase? {
        try await writer.read { db in try SupportCase.fetchOne(db, key: number) }
    }

    /// Cases visible to a user: a customer sees their account's, staff see all.
    public func cases(visibleTo user: User) async throws -> [SupportCase] {
        try await writer.read { db in
            var request = SupportCase.order(Column("number"))
            if user.role == .customer {
                request = request.filter(Column("account") == user.account)
            }
            return try request.fetchAll(db)
        }
    }
}

// MARK: - Uploads

extension AppDatabase {
    public func createUpload(_ upload: Upload) async throws {
        try await writer.write { db in try upload.insert(db) }
    }

    public func upload(id: String) async throws -> Upload? {
        try await writer.read { db in try Upload.fetchOne(db, key: id) }
    }

    /// Sets a deferred length once (creation-defer-length); fails if it was already set.
    public func setUploadLength(id: String, length: Int64, at date: Date) async throws {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE upload SET length = ?, updatedAt = ? WHERE id = ? AND length IS NULL AND offset <= ?",
                arguments: [length, date, id, length])
            if db.changesCount != 1 { throw DatabaseError(message: "upload length already set or below offset") }
        }
    }

    /// Bytes are committed only while the upload's case is not Closed, checked in the same statement,
    /// so a case closed during a PATCH receives nothing after its closing transaction.
    package static let caseIsOpen = "(SELECT status FROM supportCase WHERE number = upload.caseNumber) <> 'Closed'"

    /// Commits bytes that are already durable on disk: the new offset, the digest state that covers
    /// exactly [0, offset) and, when the upload just completed, its final state, in one transaction.
    /// The `offset = expected` guard makes a lost race fail instead of skipping bytes.
    public func recordAppend(
        id: String, from expectedOffset: Int64, to newOffset: Int64, digestState: Data,
        completion: UploadCompletion?, at date: Date
    ) async throws {
        try await writer.write { db in
            switch completion {
            case nil:
                try db.execute(
                    sql: """
                        UPDATE upload SET offset = ?, digestState = ?, updatedAt = ?
                        WHERE id = ? AND offset = ? AND state = 'uploading' AND \(Self.caseIsOpen)
                        """,
                    arguments: [newOffset, digestState, date, id, expectedOffset])
            case .verified(let sha256), .failed(let sha256):
                let state: UploadState = if case .verified = completion { .verified } else { .failed }
                try db.execute(
                    sql: """
                        UPDATE upload SET offset = ?, digestState = ?, updatedAt = ?, state = ?, sha256 = ?, completedAt = ?
                        WHERE id = ? AND offset = ? AND state = 'uploading' AND \(Self.caseIsOpen)
                        """,
                    arguments: [newOffset, digestState, date, state, sha256, date, id, expectedOffset])
            }
            if db.changesCount != 1 {
                if let row = try Row.fetchOne(db, sql: "SELECT caseNumber, NOT \(Self.caseIsOpen) AS closed FROM upload WHERE id = ?",
                                              arguments: [id]), row["closed"] == true {
                    throw CaseClosedDuringUpload(caseNumber: row["caseNumber"])
                }
                throw DatabaseError(message: "upload \(id) changed under its writer")
            }
        }
    }

    /// Records a whole-file digest declared after creation (Repr-Digest on a PATCH).
    public func declareSHA256(id: String, sha256: String) async throws {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE upload SET declaredSHA256 = ? WHERE id = ? AND declaredSHA256 IS NULL",
                arguments: [sha256, id])
        }
    }

    public func terminateUpload(id: String, at date: Date) async throws {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE upload SET state = 'terminated', updatedAt = ? WHERE id = ? AND state = 'uploading'",
                arguments: [date, id])
        }
    }

    /// Verified attachments and unfinished uploads of one case, oldest first.
    public func uploads(caseNumber: String) async throws -> [Upload] {
        try await writer.read { db in
            try Upload.filter(Column("caseNumber") == caseNumber)
                .order(Column("createdAt"), Column("id"))
                .fetchAll(db)
        }
    }

    /// Removes an upload whose creation-with-upload request failed before its `201`: the client never
    /// learned its id, so it can neither resume nor terminate it. Only an unfinished or failed upload goes
    /// (never a verified one), in one transaction; returns whether a row was removed, and the caller then
    /// removes its blob.
    public func deleteFailedCreation(id: String) async throws -> Bool {
        try await writer.write { db in
            try db.execute(sql: "DELETE FROM upload WHERE id = ? AND state IN ('uploading', 'failed')", arguments: [id])
            return db.changesCount == 1
        }
    }
}

/// The case was closed while bytes were arriving: nothing more is committed to it.
public struct CaseClosedDuringUpload: Error {
    public let caseNumber: String
}

public struct CaseNumberTaken: Error, CustomStringConvertible {
    public let number: String
    public var description: String { "case \(number) already exists" }
}

public enum UploadCompletion: Sendable {
    case verified(sha256: String)
    case failed(sha256: String)
}

public enum CaseNumber {
    /// "1413" and "00001413" name the same case; anything not 1–8 digits names none.
    public static func normalise(_ text: String) -> String? {
        guard (1...8).contains(text.utf8.count), text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return String(repeating: "0", count: 8 - text.utf8.count) + text
    }

    public static func format(_ value: Int64) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

extension AppDatabase {
    public func userNames(ids: Set<Int64>) async throws -> [Int64: String] {
        try await writer.read { db in
            let users = try User.filter(keys: Array(ids)).fetchAll(db)
            return Dictionary(uniqueKeysWithValues: users.map { ($0.id!, $0.name) })
        }
    }
}

// MARK: - Expiry and downloads

extension AppDatabase {
    /// Marks unfinished uploads without progress since `cutoff` as expired and returns their ids,
    /// whose blobs the caller then removes (a crash in between leaves orphans for the startup sweep).
    public func expireUploads(idleSince cutoff: Date, at now: Date) async throws -> [String] {
        try await writer.write { db in
            let ids = try String.fetchAll(
                db, sql: "SELECT id FROM upload WHERE state = 'uploading' AND updatedAt < ?", arguments: [cutoff])
            if !ids.isEmpty {
                try db.execute(
                    sql: "UPDATE upload SET state = 'expired', updatedAt = ? WHERE state = 'uploading' AND updatedAt < ?",
                    arguments: [now, cutoff])
            }
            return ids
        }
    }

    /// Logs a download; for one through a signed link, in the same transaction, settles the link's byte count:
    /// the `reserved` bytes charged before sending (`reserveLinkBytes`) become the bytes actually sent.
    public func recordDownload(_ download: Download, settlingLink nonce: String? = nil, reserved: Int64 = 0) async throws {
        try await writer.write { db in
            try download.insert(db)
            if let nonce {
                try db.execute(sql: "UPDATE downloadLink SET bytesServed = bytesServed - ? + ? WHERE nonce = ?",
                               arguments: [reserved, download.bytesSent, nonce])
            }
        }
    }

    public struct DownloadEntry: Codable, Sendable, FetchableRecord {
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
    }

    /// The download access log, newest first, optionally for one case or attachment.
    public func downloads(caseNumber: String?, attachmentID: String?, limit: Int) async throws -> [DownloadEntry] {
        try await writer.read { db in
            var conditions: [String] = []
            var arguments: StatementArguments = []
            if let caseNumber { conditions.append("u.caseNumber = ?"); arguments += [caseNumber] }
            if let attachmentID { conditions.append("d.uploadID = ?"); arguments += [attachmentID] }
            arguments += [limit]
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            return try DownloadEntry.fetchAll(db, sql: """
                SELECT d.id, d.uploadID AS attachmentID, u.caseNumber, u.filename, usr.name AS user, d.startedAt,
                       d.finishedAt, d.bytesSent, d.range, d.status, d.completed
                FROM download d JOIN upload u ON u.id = d.uploadID JOIN user usr ON usr.id = d.userID
                \(filter) ORDER BY d.id DESC LIMIT ?
                """, arguments: arguments)
        }
    }
}

// MARK: - Case lifecycle

extension AppDatabase {
    /// Reads a case, applies `transition` and records the event, all in one transaction.
    public func transitionCase(
        _ number: String, kind: CaseEvent.Kind, actor: String, comment: String?, at now: Date,
        _ transition: @Sendable (SupportCase) throws -> SupportCase
    ) async throws -> SupportCase {
        try await writer.write { db in
            guard let current = try SupportCase.fetchOne(db, key: number) else {
                throw CaseFilesError.caseNotFound(number)
            }
            let next = try transition(current)
            try next.update(db)
            try CaseEvent(id: nil, caseNumber: number, kind: kind, status: next.status, subStatus: next.subStatus,
                          actor: actor, comment: comment, at: now).insert(db)
            return next
        }
    }

    public func caseHistory(_ number: String) async throws -> [CaseEvent] {
        try await writer.read { db in
            try CaseEvent.filter(Column("caseNumber") == number).order(Column("id")).fetchAll(db)
        }
    }

    public func allCases() throws -> [SupportCase] {
        try syncReader.read { db in try SupportCase.order(Column("number")).fetchAll(db) }
    }
}

// MARK: - Signed download links

extension AppDatabase {
    public func createDownloadLink(_ link: DownloadLink) async throws {
        try await writer.write { db in try link.insert(db) }
    }

    /// The link with this nonce, if it was issued for this attachment.
    public func downloadLink(nonce: String, uploadID: String) async throws -> DownloadLink? {
        try readInPlace { db in
            try DownloadLink.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM downloadLink WHERE nonce = ? AND uploadID = ?"),
                arguments: [nonce, uploadID])
        }
    }

    /// Charges `count` bytes to a link before they are sent, if that keeps it within `budget` bytes; one
    /// transaction, so concurrent requests on one link can never together go past the budget. The unsent part
    /// is refunded when the response ends (`recordDownload(_:settlingLink:reserved:)`).
    /// - Returns: false when the link has not `count` bytes left.
    public func reserveLinkBytes(nonce: String, count: Int64, budget: Int64) async throws -> Bool {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE downloadLink SET bytesServed = bytesServed + ? WHERE nonce = ? AND bytesServed + ? <= ?",
                arguments: [count, nonce, count, budget])
            return db.changesCount == 1
        }
    }
}

// MARK: - Settings

extension AppDatabase {
    public func retentionSettings() throws -> RetentionSettings {
        try syncReader.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT key, value FROM setting")
            var settings = RetentionSettings.defaults
            for row in rows {
                let key: String = row["key"]
                let value: String = row["value"]
                switch key {
                case "retention-days": settings.retentionDays = Int(value) ?? settings.retentionDays
                case "reopen-days": settings.reopenDays = Int(value) ?? settings.reopenDays
                default: continue
                }
            }
            return settings
        }
    }

    public func setSetting(_ key: String, _ value: String) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT INTO setting (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           arguments: [key, value])
        }
    }
}

// MARK: - Retention purge

extension AppDatabase {
    /// Closed, not yet purged cases closed at or before `cutoff`, with the uploads that still hold bytes.
    public func casesDueForPurge(closedBy cutoff: Date) async throws -> [(SupportCase, [Upload])] {
        try await writer.read { db in
            let cases = try SupportCase
                .filter(Column("status") == CaseStatus.closed.rawValue && Column("closedAt") <= cutoff && Column("purgedAt") == nil)
                .order(Column("number")).fetchAll(db)
            return try cases.map { supportCase in
                (supportCase, try Upload
                    .filter(Column("caseNumber") == supportCase.number && ["uploading", "verified"].contains(Column("state")))
                    .order(Column("createdAt")).fetchAll(db))
            }
        }
    }

    /// A run that is still `running` when another starts was killed: mark it, with totals from its items.
    public func closeInterruptedPurgeRuns(at now: Date) async throws {
        try await writer.write { db in
            try db.execute(sql: """
                UPDATE purgeRun SET state = 'interrupted', finishedAt = ?,
                    itemsPurged = (SELECT COUNT(*) FROM purgeItem WHERE runID = purgeRun.id),
                    bytesFreed = (SELECT COALESCE(SUM(bytes), 0) FROM purgeItem WHERE runID = purgeRun.id),
                    casesPurged = (SELECT COUNT(DISTINCT caseNumber) FROM purgeItem WHERE runID = purgeRun.id)
                WHERE state = 'running'
                """, arguments: [now])
        }
    }

    public func insertPurgeRun(_ run: PurgeRun) async throws -> PurgeRun {
        try await writer.write { db in
            var run = run
            try run.insert(db)
            run.id = db.lastInsertedRowID
            return run
        }
    }

    public func updatePurgeRun(_ run: PurgeRun) async throws {
        try await writer.write { db in try run.update(db) }
    }

    /// Turns one upload into a tombstone and records it in the audit log, in one transaction. The blob
    /// is removed afterwards: a crash in between leaves an orphan file that the sweep removes.
    public func purgeUpload(_ upload: Upload, runID: Int64, at now: Date) async throws -> Bool {
        try await writer.write { db in
            try db.execute(
                sql: "UPDATE upload SET state = 'purged', purgedAt = ? WHERE id = ? AND state IN ('uploading', 'verified')",
                arguments: [now, upload.id])
            guard db.changesCount == 1 else { return false }
            try PurgeItem(id: nil, runID: runID, caseNumber: upload.caseNumber, uploadID: upload.id,
                          filename: upload.filename, previousState: upload.state, bytes: upload.offset, at: now).insert(db)
            return true
        }
    }

    public func markCasePurged(_ supportCase: SupportCase, policy: String, at now: Date) async throws {
        try await writer.write { db in
            try db.execute(sql: "UPDATE supportCase SET purgedAt = ? WHERE number = ? AND purgedAt IS NULL",
                           arguments: [now, supportCase.number])
            try CaseEvent(id: nil, caseNumber: supportCase.number, kind: .purged, status: supportCase.status,
                          subStatus: supportCase.subStatus, actor: "retention", comment: policy, at: now).insert(db)
        }
    }

    public func purgeRuns(limit: Int) async throws -> [PurgeRun] {
        try await writer.read { db in try PurgeRun.order(Column("id").desc).limit(limit).fetchAll(db) }
    }

    public func purgeItems(runID: Int64) async throws -> [PurgeItem] {
        try await writer.read { db in try PurgeItem.filter(Column("runID") == runID).order(Column("id")).fetchAll(db) }
    }

    /// Upload states by id, for the orphan sweep.
    public func uploadStates() throws -> [String: UploadState] {
        try syncReader.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, state FROM upload")
            var states: [String: UploadState] = [:]
            for row in rows {
                if let state = UploadState(rawValue: row["state"]) { states[row["id"]] = state }
            }
            return states
        }
    }
}
