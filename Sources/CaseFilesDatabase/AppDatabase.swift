import Foundation
import GRDB
import CaseFilesCore

/// The SQLite `MetadataStore`: owns the database, its schema (named migrations, appended and never edited) and
/// every query the service makes, each one transaction with an intention-revealing name. Every write goes
/// through `write`, which turns a full disk (SQLITE_FULL) into `CaseFilesError.databaseFull`.
///
/// Every query is `async` and runs on GRDB's queues, except the in-place key lookups (see `readInPlace`);
/// opening (`open`, migrations) blocks and is `noasync`: callers run it on a blocking thread.
public struct AppDatabase: MetadataStore {
    let writer: any DatabaseWriter  // internal: AppDatabase+Concatenation.swift queries it too
    /// Connections for synchronous reads only. An asynchronous read keeps its pooled connection until its
    /// task resumes on an executor thread (an event loop in `serve`), so a synchronous read waiting on
    /// those threads for the same pool can block them all while every connection waits for them: the
    /// server once hung so under 48 clients. These connections are never held across a suspension, so
    /// waiting for one costs at most a query.
    private let syncReader: any DatabaseReader

    /// - Parameter moveLinkSigningKey: receives a link-signing key found in the database (kept there before the
    ///   v5 migration) and must store it durably elsewhere before the migration deletes it.
    @available(*, noasync, message: "migrates the database, blocking; open it from synchronous code or on a thread pool")
    public init(_ writer: any DatabaseWriter, moveLinkSigningKey: @escaping @Sendable ([UInt8]) throws -> Void) throws {
        try Self.mappingFullDisk { try Self.migrator(moveLinkSigningKey: moveLinkSigningKey).migrate(writer) }
        self.init(migrated: writer, syncReader: writer)
    }

    private init(migrated writer: any DatabaseWriter, syncReader: any DatabaseReader) {
        self.writer = writer
        self.syncReader = syncReader
    }

    /// Opens (creating if needed) the database file in WAL mode, so CLI commands can run while `serve` does.
    /// - Parameter moveLinkSigningKey: see `init(_:moveLinkSigningKey:)`.
    @available(*, noasync, message: "opens and migrates the database, blocking; call it from synchronous code or on a thread pool")
    public static func open(path: String, moveLinkSigningKey: @escaping @Sendable ([UInt8]) throws -> Void) throws -> AppDatabase {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let writer = try DatabasePool(path: path, configuration: config)
        try mappingFullDisk { try migrator(moveLinkSigningKey: moveLinkSigningKey).migrate(writer) }  // before the read-only pool opens: it cannot create the file
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
        migrator.registerMigration("v6: who sent each append") { db in
            // Every byte has an author: one row per committed append, written in the offset's transaction.
            try db.create(table: "uploadAppend") { t in
                t.autoIncrementedPrimaryKey("id")
                // A failed creation's upload row is deleted (`deleteFailedCreation`), and its appends with it.
                t.column("uploadID", .text).notNull().indexed().references("upload", onDelete: .cascade)
                t.column("fromOffset", .integer).notNull()
                t.column("toOffset", .integer).notNull()
                t.column("userID", .integer).notNull().references("user", onDelete: .restrict)
                t.column("at", .datetime).notNull()
                t.check(sql: "fromOffset >= 0 AND toOffset > fromOffset")
            }
            try db.create(index: "downloadLink_on_expiresAt", on: "downloadLink", columns: ["expiresAt"])
        }
        migrator.registerMigration("v7: backup lease, event outbox") { db in
            // One row while `casefiles backup` runs: the blob removers (purge, expiry, orphan sweep) check it in
            // the transaction that decides a removal. It expires, so a crashed backup stops holding them.
            try db.create(table: "backupLease") { t in
                t.primaryKey("name", .text).check(sql: "name = 'backup'")
                t.column("holder", .text).notNull()
                t.column("expiresAt", .datetime).notNull()
            }
            // Events for the case system, written in the transaction of the state change they report.
            try db.create(table: "outboxEvent") { t in
                t.primaryKey("id", .text)
                t.column("type", .text).notNull()
                t.column("body", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("state", .text).notNull().check(sql: "state IN ('pending', 'delivered', 'dead')")
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("nextAttemptAt", .datetime).notNull()
                t.column("lastError", .text)
                t.column("deliveredTo", .text).notNull().defaults(to: "")
                t.column("finishedAt", .datetime)
            }
            try db.create(index: "outboxEvent_due", on: "outboxEvent", columns: ["state", "nextAttemptAt"])
        }
        migrator.registerMigration("v8: drop credentials, and uploads they create") { db in
            // Issue #20: per-case credentials for plain tools. The secret's SHA-256 only, like user tokens.
            try db.create(table: "dropToken") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("caseNumber", .text).notNull().indexed().references("supportCase", onDelete: .cascade)
                t.column("tokenHash", .text).notNull().unique()
                t.column("createdBy", .integer).notNull().references("user", onDelete: .restrict)
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
                t.column("revokedAt", .datetime)
                t.column("lastUsedAt", .datetime)
            }
            // The credential that created an upload, which alone may append to it ("only the creator appends");
            // `createdBy` stays the accountable user (the credential's maker).
            try db.alter(table: "upload") { t in
                t.add(column: "createdByDropToken", .integer).references("dropToken", onDelete: .restrict)
            }
            try db.create(index: "upload_on_dropToken_filename", on: "upload",
                          columns: ["createdByDropToken", "filename", "state"])
        }
        migrator.registerMigration("v9: tus concatenation (partial and final uploads)") { db in
            try Self.migrateConcatenation(db)
        }
        registerBundleMigration(&migrator)
        migrator.registerMigration("v11: the finished object's entity tag in the blob store") { db in
            try db.alter(table: "upload") { t in
                t.add(column: "objectETag", .text).check(sql: "objectETag IS NULL OR length(objectETag) BETWEEN 1 AND 256")
            }
        }
        return migrator
    }
}

// MARK: - Writes, reads and the full disk

extension AppDatabase {
    /// BEGIN IMMEDIATE takes SQLite's RESERVED lock, as a write would (sqlite.org/lang_transaction.html),
    /// then ROLLBACK: nothing reaches the file.
    public func probeWrite() async throws {
        try await writer.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) { .rollback }
        }
    }

    /// Every asynchronous write: one transaction on GRDB's writer queue.
    /// - Throws: `CaseFilesError.databaseFull` when SQLite finds the disk full; what `updates` throws.
    func write<T: Sendable>(_ updates: @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await writer.write(updates)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw CaseFilesError.databaseFull
        }
    }


    /// Runs `body`, turning SQLITE_FULL (sqlite.org/rescode.html#full) into `CaseFilesError.databaseFull`.
    private static func mappingFullDisk<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw CaseFilesError.databaseFull
        }
    }

    /// The in-place reads: key lookups (token, upload, upload with its case, link), run on the
    /// calling thread instead of GRDB's queue. Each takes tens of microseconds with a cached statement, less
    /// than the two thread hops of an asynchronous read, which under load add milliseconds to every request;
    /// compiling their SQL on every request was half of a HEAD probe's server CPU (870 -> 360-450 us). They use
    /// `syncReader`, never held across a suspension (ARCHITECTURE.md, "The data path": the pool deadlock under
    /// 48 clients). This is the one exception to "no blocking call in async code".
    func readInPlace<T>(_ value: (Database) throws -> T) throws -> T {
        try syncReader.read(value)
    }

    /// SQLite stores dates to the millisecond (GRDB's "yyyy-MM-dd HH:mm:ss.SSS"), so a bound compared in SQL
    /// is widened by a millisecond: SQL only narrows the candidates, the Core rule decides.
    static func sqlUpperBound(_ date: Date) -> Date {
        date.addingTimeInterval(0.001)
    }
}

// MARK: - Users

extension AppDatabase {
    public func createUser(_ user: User) async throws -> User {
        try await write { db in try user.inserted(db) }
    }

    public func activeUser(tokenHash: String) async throws -> User? {
        try readInPlace { db in
            try User.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM user WHERE tokenHash = ? AND revokedAt IS NULL"),
                arguments: [tokenHash])
        }
    }

    public func revokeUser(named name: String, at date: Date) async throws -> Bool {
        try await write { db in try Self.revokeUser(db, named: name, at: date) }
    }

    private static func revokeUser(_ db: Database, named name: String, at date: Date) throws -> Bool {
        try User.filter(User.Columns.name == name && User.Columns.revokedAt == nil)
            .updateAll(db, User.Columns.revokedAt.set(to: date)) > 0
    }

    public func allUsers() async throws -> [User] {
        try await writer.read { db in try User.order(User.Columns.name).fetchAll(db) }
    }

    public func user(id: Int64) async throws -> User? {
        try await writer.read { db in try User.fetchOne(db, key: id) }
    }

    public func userNames(ids: Set<Int64>) async throws -> [Int64: String] {
        try await writer.read { db in
            let users = try User.filter(keys: Array(ids)).fetchAll(db)
            return Dictionary(uniqueKeysWithValues: users.map { ($0.id!, $0.name) })
        }
    }
}

// MARK: - Cases

extension AppDatabase {
    public func createCase(_ supportCase: SupportCase, numberGiven: Bool) async throws -> SupportCase {
        try await write { db in try Self.createCase(db, supportCase, numberGiven: numberGiven) }
    }

    private static func createCase(_ db: Database, _ supportCase: SupportCase, numberGiven: Bool) throws -> SupportCase {
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

    public func supportCase(number: String) async throws -> SupportCase? {
        try await writer.read { db in try SupportCase.fetchOne(db, key: number) }
    }

    public func cases(visibleTo user: User) async throws -> [SupportCase] {
        try await writer.read { db in
            var request = SupportCase.order(SupportCase.Columns.number)
            if user.role == .customer {
                request = request.filter(SupportCase.Columns.account == user.account)
            }
            return try request.fetchAll(db)
        }
    }

    public func allCases() async throws -> [SupportCase] {
        try await writer.read { db in try SupportCase.order(SupportCase.Columns.number).fetchAll(db) }
    }

    public func transitionCase(
        _ number: String, kind: CaseEvent.Kind, actor: String, comment: String?, at now: Date,
        _ transition: @Sendable (SupportCase) throws -> SupportCase
    ) async throws -> SupportCase {
        try await write { db in
            guard let current = try SupportCase.fetchOne(db, key: number) else {
                throw CaseFilesError.caseNotFound(number)
            }
            let next = try transition(current)
            try next.update(db)
            if next.isClosed && !current.isClosed {
                // Closing a case revokes its drop credentials at once, in the closing transaction (issue #20).
                try db.execute(sql: "UPDATE dropToken SET revokedAt = ? WHERE caseNumber = ? AND revokedAt IS NULL",
                               arguments: [now, number])
            }
            _ = try CaseEvent(id: nil, caseNumber: number, kind: kind, status: next.status, subStatus: next.subStatus,
                              actor: actor, comment: comment, at: now).inserted(db)
            return next
        }
    }

    public func caseHistory(_ number: String, after: Int64?, limit: Int) async throws -> [CaseEvent] {
        try await writer.read { db in
            try CaseEvent.filter(CaseEvent.Columns.caseNumber == number && CaseEvent.Columns.id > (after ?? 0))
                .order(CaseEvent.Columns.id).limit(limit).fetchAll(db)
        }
    }

    public func cases(visibleTo user: User, after: String?, limit: Int) async throws -> [SupportCase] {
        try await writer.read { db in
            var request = SupportCase.filter(SupportCase.Columns.number > (after ?? "")).order(SupportCase.Columns.number)
            if user.role == .customer {
                request = request.filter(SupportCase.Columns.account == user.account)
            }
            return try request.limit(limit).fetchAll(db)
        }
    }

    public func caseHistory(_ number: String) async throws -> [CaseEvent] {
        try await writer.read { db in
            try CaseEvent.filter(CaseEvent.Columns.caseNumber == number).order(CaseEvent.Columns.id).fetchAll(db)
        }
    }
}

// MARK: - Uploads

extension AppDatabase {
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

    public func createUpload(_ upload: Upload) async throws {
        try await write { db in try upload.insert(db) }
    }

    /// The usage and the reservations are read on the writer, in the insert's own transaction: no other write
    /// (another creation among them) can come between the check and the insert.
    public func createUpload(
        _ upload: Upload, admitting admit: @Sendable (UploadUsage, _ reservedBytes: Int64) throws -> Void
    ) async throws {
        try await write { db in
            try admit(try Self.uploadUsage(db, caseNumber: upload.caseNumber, userID: upload.createdBy),
                      try Self.reservedBytes(db))
            try upload.insert(db)
        }
    }

    /// In place: every append re-reads its upload under the writer lock (`UploadAdmission.admit`).
    public func upload(id: String) async throws -> Upload? {
        try readInPlace { db in
            try Upload.fetchOne(db.cachedStatement(sql: "SELECT * FROM upload WHERE id = ?"), arguments: [id])
        }
    }

    public func setUploadLength(id: String, length: Int64, at date: Date) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE upload SET length = ?, updatedAt = ? WHERE id = ? AND length IS NULL AND offset <= ?",
                arguments: [length, date, id, length])
            if db.changesCount != 1 {
                throw UploadChangedUnderWriter(id: id, detail: "length already set or below the offset")
            }
        }
    }

    /// Bytes are committed only while the upload's case is not Closed, checked in the same statement,
    /// so a case closed during a PATCH receives nothing after its closing transaction.
    package static let caseIsOpen = "(SELECT status FROM supportCase WHERE number = upload.caseNumber) <> 'Closed'"

    /// The `offset = expected` guard makes a lost race fail instead of skipping bytes; the schema's CHECKs
    /// refuse `offset > length` and `verified` without a SHA-256 (the transaction is then rolled back).
    public func recordAppend(
        id: String, by sender: Int64, from expectedOffset: Int64, to newOffset: Int64, digestState: Data,
        completion: UploadCompletion?, at date: Date
    ) async throws {
        try await write { db in
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
                throw UploadChangedUnderWriter(id: id, detail: "changed under its writer (not at offset \(expectedOffset) or no longer uploading)")
            }
            if newOffset > expectedOffset {
                try db.execute(
                    sql: "INSERT INTO uploadAppend (uploadID, fromOffset, toOffset, userID, at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [id, expectedOffset, newOffset, sender, date])
            }
            if completion != nil { try Self.enqueueCompletionEvent(db, uploadID: id, at: date) }
        }
    }

    public func appends(uploadID: String) async throws -> [AppendRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT uploadID, fromOffset, toOffset, userID, at FROM uploadAppend WHERE uploadID = ? ORDER BY fromOffset, id
                """, arguments: [uploadID]).map { (row: Row) -> AppendRecord in
                let uploadID: String = row["uploadID"]
                let from: Int64 = row["fromOffset"], to: Int64 = row["toOffset"], userID: Int64 = row["userID"]
                let at: Date = row["at"]
                return AppendRecord(uploadID: uploadID, fromOffset: from, toOffset: to, userID: userID, at: at)
            }
        }
    }

    public func reservedBytes() async throws -> Int64 {
        try await writer.read { db in try Self.reservedBytes(db) }
    }

    public func uploadUsage(caseNumber: String, userID: Int64) async throws -> UploadUsage {
        try await writer.read { db in try Self.uploadUsage(db, caseNumber: caseNumber, userID: userID) }
    }

    /// The one SQL of `reservedBytes`, for a read and for `createUpload(_:admitting:)`'s transaction.
    static func reservedBytes(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: """
            SELECT COALESCE(SUM(length - offset), 0) FROM upload WHERE state = 'uploading' AND length IS NOT NULL
                AND concat IS NOT 'final'
            """) ?? 0
    }

    /// The one SQL of `uploadUsage`, for a read and for `createUpload(_:admitting:)`'s transaction.
    static func uploadUsage(_ db: Database, caseNumber: String, userID: Int64) throws -> UploadUsage {
        let row = try Row.fetchOne(db, sql: """
            SELECT
                (SELECT COUNT(*) FROM upload WHERE state = 'uploading' AND createdBy = ?) AS byUser,
                (SELECT COUNT(*) FROM upload WHERE state = 'uploading' AND caseNumber = ?) AS inCase,
                (SELECT COALESCE(SUM(COALESCE(length, offset)), 0) FROM upload
                 WHERE caseNumber = ? AND state IN ('uploading', 'verified') AND concat IS NOT 'final')
                + (SELECT COALESCE(SUM(b.indexBytes), 0) FROM bundleIndex b JOIN upload u ON u.id = b.attachmentID
                   WHERE u.caseNumber = ? AND u.state = 'verified') AS caseBytes
            """, arguments: [userID, caseNumber, caseNumber, caseNumber])
        let byUser: Int = row?["byUser"] ?? 0, inCase: Int = row?["inCase"] ?? 0
        let caseBytes: Int64 = row?["caseBytes"] ?? 0
        return UploadUsage(unfinishedByUser: byUser, unfinishedInCase: inCase, caseBytes: caseBytes)
    }

    public func declareSHA256(id: String, sha256: String) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE upload SET declaredSHA256 = ? WHERE id = ? AND declaredSHA256 IS NULL",
                arguments: [sha256, id])
        }
    }

    public func recordStoredObject(uploadID: String, etag: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE upload SET objectETag = ? WHERE id = ? AND state = 'verified'",
                           arguments: [etag, uploadID])
        }
    }

    public func terminateUpload(id: String, at date: Date) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE upload SET state = 'terminated', updatedAt = ? WHERE id = ? AND state = 'uploading'",
                arguments: [date, id])
        }
    }

    /// A page of the case's listing: its attachments and unfinished uploads, never partial uploads (tus
    /// concatenation: they are parts of a final upload, not attachments of their own).
    public func caseListing(_ caseNumber: String, after: ListingPosition?, limit: Int) async throws -> [Upload] {
        try await writer.read { db in
            var arguments: StatementArguments = [caseNumber]
            var cursor = ""
            if let after {
                // Row values (sqlite.org/rowvalue.html): strictly after the cursor's place in the listing's order.
                // The milliseconds become the stored text ("yyyy-MM-dd HH:mm:ss.SSS", rounded to the millisecond
                // by SQLite's 'unixepoch'), so the comparison is exact.
                cursor = "AND (createdAt, id) > (strftime('%Y-%m-%d %H:%M:%f', ? / 1000.0, 'unixepoch'), ?)"
                arguments += [after.createdAtMilliseconds, after.id]
            }
            arguments += [limit]
            return try Upload.fetchAll(db, sql: """
                SELECT * FROM upload WHERE caseNumber = ? AND state IN ('verified', 'purged', 'uploading')
                    AND concat IS NOT 'partial' \(cursor)
                ORDER BY createdAt, id LIMIT ?
                """, arguments: arguments)
        }
    }

    public func uploads(caseNumber: String) async throws -> [Upload] {
        try await writer.read { db in
            // Partial uploads are parts of a final upload, never attachments of their own (tus concatenation).
            try Upload.filter(Upload.Columns.caseNumber == caseNumber).filter(sql: "concat IS NOT 'partial'")
                .order(Upload.Columns.createdAt, Upload.Columns.id)
                .fetchAll(db)
        }
    }

    /// Only an unfinished or failed upload goes (never a verified one), in one transaction.
    public func deleteFailedCreation(id: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM upload WHERE id = ? AND state IN ('uploading', 'failed')", arguments: [id])
            return db.changesCount == 1
        }
    }

    /// One transaction: the rows SQL narrows to (`Upload.expiryCandidatesBound`), kept if `Upload.isExpired`
    /// says so, become `expired`. A crash before the caller removes the blobs leaves orphans for the sweep.
    public func expireUploads(at now: Date, expiry: TimeInterval) async throws -> [String] {
        let bound = Self.sqlUpperBound(Upload.expiryCandidatesBound(at: now, expiry: expiry))
        return try await write { db in
            // A backup copying the blobs this names holds off their removal (`backupLease`).
            if try Self.backupLease(db, at: now) != nil { return [] }
            let candidates = try Row.fetchAll(
                db, sql: "SELECT id, caseNumber, filename, length, updatedAt FROM upload WHERE \(Self.expirable) AND updatedAt <= ?",
                arguments: [bound])
            let expired = candidates.filter { row in
                Upload.isExpired(lastProgress: row["updatedAt"], at: now, expiry: expiry)
            }
            let ids: [String] = expired.map { $0["id"] }
            for row in expired {
                try Self.enqueue(db, .make(.uploadFailed, .init(
                    caseNumber: row["caseNumber"], uploadID: row["id"], filename: row["filename"], length: row["length"],
                    reason: "expired"), at: now))
            }
            // In batches: one SQL variable per id, and SQLite caps them (32,766), which a long downtime with
            // many abandoned uploads could pass, failing every sweep after it.
            for start in stride(from: 0, to: ids.count, by: 500) {
                try Upload.filter(keys: ids[start..<min(start + 500, ids.count)])
                    .filter(sql: Self.expirable)
                    .updateAll(db, Upload.Columns.state.set(to: UploadState.expired), Upload.Columns.updatedAt.set(to: now))
            }
            return ids
        }
    }

    public func uploadStates() async throws -> [String: UploadState] {
        try await writer.read { db in try Self.uploadStates(db) }
    }

    private static func uploadStates(_ db: Database) throws -> [String: UploadState] {
        let rows = try Row.fetchAll(db, sql: "SELECT id, state FROM upload")
        var states: [String: UploadState] = [:]
        for row in rows {
            if let state = UploadState(rawValue: row["state"]) { states[row["id"]] = state }
        }
        return states
    }
}

// MARK: - Downloads and signed links

extension AppDatabase {
    public func recordDownload(_ download: Download, settlingLink nonce: String?, reserved: Int64) async throws {
        try await write { db in
            _ = try download.inserted(db)
            if let nonce {
                try db.execute(sql: "UPDATE downloadLink SET bytesServed = bytesServed - ? + ? WHERE nonce = ?",
                               arguments: [reserved, download.bytesSent, nonce])
            }
        }
    }

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
                       d.finishedAt, d.bytesSent, d.range, d.status, d.completed, d.entryPath
                FROM download d JOIN upload u ON u.id = d.uploadID JOIN user usr ON usr.id = d.userID
                \(filter) ORDER BY d.id DESC LIMIT ?
                """, arguments: arguments)
        }
    }

    public func createDownloadLink(_ link: DownloadLink) async throws {
        try await write { db in try link.insert(db) }
    }

    public func downloadLink(nonce: String, uploadID: String) async throws -> DownloadLink? {
        try readInPlace { db in
            try DownloadLink.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM downloadLink WHERE nonce = ? AND uploadID = ?"),
                arguments: [nonce, uploadID])
        }
    }

    /// One conditional UPDATE, so concurrent requests on one link can never together go past the budget. The
    /// unsent part is refunded when the response ends (`recordDownload(_:settlingLink:reserved:)`).
    /// The rule `DownloadLinks.isLive` applies when a link is used: its `expiresAt`, capped at `maxLifetime`
    /// after `issuedAt` (rows from before v5 have no `issuedAt` and go by their expiry alone).
    public func pruneExpiredLinks(at now: Date, maxLifetime: TimeInterval) async throws -> Int {
        try await write { db in
            try db.execute(sql: "DELETE FROM downloadLink WHERE expiresAt < ? OR (issuedAt IS NOT NULL AND issuedAt < ?)",
                           arguments: [now, now.addingTimeInterval(-maxLifetime)])
            return db.changesCount
        }
    }

    public func reserveLinkBytes(nonce: String, count: Int64, budget: Int64) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE downloadLink SET bytesServed = bytesServed + ? WHERE nonce = ? AND bytesServed + ? <= ?",
                arguments: [count, nonce, count, budget])
            return db.changesCount == 1
        }
    }
}

// MARK: - Settings

extension AppDatabase {
    public func retentionSettings() async throws -> RetentionSettings {
        try await writer.read { db in try Self.retentionSettings(db) }
    }

    private static func retentionSettings(_ db: Database) throws -> RetentionSettings {
        let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT key, value FROM setting"))
        return RetentionSettings(stored: rows.map { (key: $0["key"] as String, value: $0["value"] as String) })
    }

    public func setSetting(_ key: String, _ value: String) async throws {
        try await write { db in try Self.setSetting(db, key, value) }
    }

    private static func setSetting(_ db: Database, _ key: String, _ value: String) throws {
        try db.execute(sql: "INSERT INTO setting (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       arguments: [key, value])
    }
}

// MARK: - Retention purge

extension AppDatabase {
    /// SQL narrows to closed, unpurged cases closed by `PurgeEligibility.closedBy` (widened to SQL's
    /// millisecond); `PurgeEligibility.of` keeps the due and held ones.
    public func casesDueForPurge(asOf: Date, settings: RetentionSettings) async throws -> [(SupportCase, [Upload])] {
        let bound = Self.sqlUpperBound(PurgeEligibility.closedBy(asOf: asOf, settings: settings))
        return try await writer.read { db in
            let cases = try SupportCase
                .filter(SupportCase.Columns.status == CaseStatus.closed && SupportCase.Columns.closedAt <= bound
                        && SupportCase.Columns.purgedAt == nil)
                .order(SupportCase.Columns.number).fetchAll(db)
                .filter { PurgeEligibility.of($0, asOf: asOf, settings: settings) != .notDue }
            return try cases.map { supportCase in
                (supportCase, try Upload
                    .filter(Upload.Columns.caseNumber == supportCase.number && UploadState.blobOwners.contains(Upload.Columns.state))
                    .order(Upload.Columns.createdAt).fetchAll(db))
            }
        }
    }

    public func closeInterruptedPurgeRuns(at now: Date) async throws {
        try await write { db in
            try db.execute(sql: """
                UPDATE purgeRun SET state = ?, finishedAt = ?,
                    itemsPurged = (SELECT COUNT(*) FROM purgeItem WHERE runID = purgeRun.id),
                    bytesFreed = (SELECT COALESCE(SUM(bytes), 0) FROM purgeItem WHERE runID = purgeRun.id),
                    casesPurged = (SELECT COUNT(DISTINCT caseNumber) FROM purgeItem WHERE runID = purgeRun.id)
                WHERE state = ?
                """, arguments: [PurgeRun.State.interrupted, now, PurgeRun.State.running])
        }
    }

    public func insertPurgeRun(_ run: PurgeRun) async throws -> PurgeRun {
        try await write { db in try run.inserted(db) }
    }

    public func updatePurgeRun(_ run: PurgeRun) async throws {
        try await write { db in try run.update(db) }
    }

    /// The blob is removed afterwards: a crash in between leaves an orphan file that the sweep removes.
    public func purgeUpload(_ upload: Upload, runID: Int64, at now: Date) async throws -> Bool {
        try await write { db in
            if let lease = try Self.backupLease(db, at: now) { throw BackupInProgress(until: lease.expiresAt) }
            let changed = try Upload.filter(key: upload.id).filter(UploadState.blobOwners.contains(Upload.Columns.state))
                .updateAll(db, Upload.Columns.state.set(to: UploadState.purged), Upload.Columns.purgedAt.set(to: now))
            guard changed == 1 else { return false }
            try Self.deleteBundleIndex(db, attachmentID: upload.id)
            _ = try PurgeItem(id: nil, runID: runID, caseNumber: upload.caseNumber, uploadID: upload.id,
                              filename: upload.filename, previousState: upload.state, bytes: upload.offset, at: now)
                .inserted(db)
            return true
        }
    }

    public func markCasePurged(_ supportCase: SupportCase, policy: String, at now: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE supportCase SET purgedAt = ? WHERE number = ? AND purgedAt IS NULL",
                           arguments: [now, supportCase.number])
            if db.changesCount == 1 {
                let totals = try Row.fetchOne(
                    db, sql: "SELECT COUNT(*) AS items, COALESCE(SUM(bytes), 0) AS bytes FROM purgeItem WHERE caseNumber = ?",
                    arguments: [supportCase.number])
                try Self.enqueue(db, .make(.casePurged, .init(
                    caseNumber: supportCase.number, policy: policy, itemsPurged: totals?["items"],
                    bytesPurged: totals?["bytes"]), at: now))
            }
            _ = try CaseEvent(id: nil, caseNumber: supportCase.number, kind: .purged, status: supportCase.status,
                              subStatus: supportCase.subStatus, actor: "retention", comment: policy, at: now).inserted(db)
        }
    }

    public func purgeRuns(limit: Int) async throws -> [PurgeRun] {
        try await writer.read { db in try PurgeRun.order(PurgeRun.Columns.id.desc).limit(limit).fetchAll(db) }
    }

    public func purgeItems(runID: Int64) async throws -> [PurgeItem] {
        try await writer.read { db in
            try PurgeItem.filter(PurgeItem.Columns.runID == runID).order(PurgeItem.Columns.id).fetchAll(db)
        }
    }
}

// MARK: - Drop credentials (issue #20)

extension AppDatabase {
    public func createDropToken(_ token: DropToken) async throws -> DropToken {
        try await write { db in try token.inserted(db) }
    }

    public func dropTokens(caseNumber: String) async throws -> [DropToken] {
        try await writer.read { db in
            try DropToken.filter(DropToken.Columns.caseNumber == caseNumber).order(DropToken.Columns.id).fetchAll(db)
        }
    }

    public func revokeDropToken(id: Int64, caseNumber: String, at date: Date) async throws -> DropToken? {
        try await write { db in
            try db.execute(sql: "UPDATE dropToken SET revokedAt = ? WHERE id = ? AND caseNumber = ? AND revokedAt IS NULL",
                           arguments: [date, id, caseNumber])
            return try DropToken.filter(DropToken.Columns.id == id && DropToken.Columns.caseNumber == caseNumber).fetchOne(db)
        }
    }

    public func dropToken(tokenHash: String) async throws -> (DropToken, SupportCase)? {
        try readInPlace { db in
            guard let token = try DropToken.fetchOne(
                      db.cachedStatement(sql: "SELECT * FROM dropToken WHERE tokenHash = ?"), arguments: [tokenHash]),
                  let supportCase = try SupportCase.fetchOne(
                      db.cachedStatement(sql: "SELECT * FROM supportCase WHERE number = ?"), arguments: [token.caseNumber])
            else { return nil }
            return (token, supportCase)
        }
    }

    public func markDropTokenUsed(id: Int64, at date: Date) async throws {
        try await write { db in
            // The first use also tells the case system, in the same transaction (the outbox: issue #18).
            let caseNumber = try String.fetchOne(
                db, sql: "SELECT caseNumber FROM dropToken WHERE id = ? AND lastUsedAt IS NULL", arguments: [id])
            try db.execute(sql: "UPDATE dropToken SET lastUsedAt = ? WHERE id = ?", arguments: [date, id])
            if let caseNumber {
                try Self.enqueue(db, .make(.dropCredentialFirstUsed, .init(caseNumber: caseNumber, dropCredentialID: id),
                                           at: date))
            }
        }
    }

    public func newestUnfinishedUpload(caseNumber: String, filename: String, createdBy: Int64,
                                       dropToken: Int64?) async throws -> Upload? {
        try await writer.read { db in
            try Upload.fetchOne(db, sql: """
                SELECT * FROM upload
                WHERE caseNumber = ? AND filename = ? AND state = 'uploading' AND createdBy = ? AND createdByDropToken IS ?
                ORDER BY createdAt DESC, rowid DESC LIMIT 1
                """, arguments: [caseNumber, filename, createdBy, dropToken])
        }
    }
}
