import CaseFilesCore
import CaseFilesDatabase
import Foundation
import Logging
import PostgresNIO
import _ConnectionPoolModule

/// The PostgreSQL `MetadataStore` (`serve --database postgres://…`): the schema of `PostgresSchema` (AppDatabase's
/// migrations by name) and every query `AppDatabase` makes, each in one transaction with the same guards.
///
/// Where SQLite's single writer serialized two transactions for free, a row lock does here (READ COMMITTED, the
/// default): an append locks its case's row `FOR SHARE` and a case transition `FOR UPDATE`, so a case closed during
/// a PATCH receives nothing after its closing transaction commits; a case created without a number locks the
/// table against other inserts while it takes the next one. A single conditional UPDATE (an append's offset guard,
/// a link's byte budget) needs no more: PostgreSQL re-checks its WHERE on the newest row version
/// (postgresql.org/docs/15/transaction-iso.html §13.2.1).
///
/// Connections come from a `PostgresClient` pool whose `run()` this store starts in a task of its own and cancels
/// in `shutdown()`; it is not a `Service` of the server's group, so it outlives the graceful shutdown in which
/// in-flight uploads still commit.
public final class PostgresMetadataStore: MetadataStore {
    let client: PostgresClient
    private let running: Task<Void, Never>
    let logger: Logger
    public let location: PostgresLocation

    /// `running` once the pool runs: a lease asked for before `run()` is queued (and logged as a warning).
    private init(location: PostgresLocation, logger: Logger, running started: AsyncStream<Void>.Continuation) {
        self.location = location
        self.logger = logger
        let client = PostgresClient(configuration: location.clientConfiguration, backgroundLogger: logger)
        self.client = client
        running = Task {
            started.finish()
            await client.run()
        }
    }

    /// Applies the migrations this database has not recorded yet over one connection of its own, then starts the
    /// pool. That connection fails at once (refused, a wrong password, no such database: `connectTimeout`, 10 s, at
    /// most), where the pool would retry without end.
    /// - Throws: `PostgresOpenError` when the server cannot be reached, refuses the login or a migration.
    public static func connect(_ location: PostgresLocation, logger: Logger = Logger(label: "casefiles.postgres"))
        async throws -> PostgresMetadataStore {
        do {
            let connection = try await PostgresConnection.connect(
                configuration: try location.connectionConfiguration(), id: 0, logger: logger)
            do {
                try await migrate(connection, logger: logger)
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        } catch {
            throw PostgresOpenError(location: location, underlying: error)
        }
        let (started, continuation) = AsyncStream<Void>.makeStream()
        let store = PostgresMetadataStore(location: location, logger: logger, running: continuation)
        for await _ in started {}
        return store
    }

    /// Closes the pool's connections; the store answers no query after this.
    public func shutdown() async {
        running.cancel()
        await running.value
    }

    /// Each pending migration in its own transaction, under an advisory lock: `serve` and a CLI command that start
    /// together apply each one once, and a failed migration leaves the ones before it applied.
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        while true {
            let done: Bool = try await transaction(on: connection, logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLock))", logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: PostgresSchema.migrationTable), logger: logger)
                var applied: Set<String> = []
                for try await name in try await connection.query("SELECT name FROM schemaMigration", logger: logger)
                    .decode(String.self) { applied.insert(name) }
                guard let next = PostgresSchema.migrations.first(where: { !applied.contains($0.name) }) else { return true }
                for statement in next.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schemaMigration (name) VALUES (\(next.name))", logger: logger)
                return false
            }
            if done { return }
        }
    }

    /// The names of the migrations this database has applied, in the order they were.
    public func appliedMigrations() async throws -> [String] {
        try await rows("SELECT name FROM schemaMigration ORDER BY appliedAt, name") { cells in try cells.next(String.self) }
    }

    // MARK: Running queries

    /// One transaction on a pooled connection (see `transaction(on:)`).
    func write<T: Sendable>(_ begin: PostgresQuery = "BEGIN",
                                    _ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let logger = self.logger
        return try await Self.mappingErrors {
            try await client.withConnection { connection in
                try await Self.transaction(on: connection, begin: begin, logger: logger, body)
            }
        }
    }

    /// The errors callers act on, in the terms `AppDatabase` uses: PostgreSQL's "disk full" (SQLSTATE 53100,
    /// postgresql.org/docs/15/errcodes-appendix.html) becomes `CaseFilesError.databaseFull`, as SQLITE_FULL does; a
    /// wait for a pooled connection cut short by the task's cancellation (a superseded or stopped upload request)
    /// becomes `CancellationError`, which the upload engine answers with the stop's reason (`UploadWriter`).
    static func mappingErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "53100" {
            throw CaseFilesError.databaseFull
        } catch let error as ConnectionPoolError where error == .requestCancelled {
            throw CancellationError()
        }
    }

    /// `begin`, `body`, COMMIT; on an error ROLLBACK, and the error passed on as it is (PostgresNIO's
    /// `withTransaction` would wrap the domain's errors).
    static func transaction<T>(on connection: PostgresConnection, begin: PostgresQuery = "BEGIN", logger: Logger,
                                       _ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await connection.query(begin, logger: logger)
        do {
            let value = try await body(connection)
            try await connection.query("COMMIT", logger: logger)
            return value
        } catch {
            try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    /// The rows of one statement outside a transaction (a read, or a write that is one statement), each decoded.
    func rows<T: Sendable>(_ query: PostgresQuery, _ decode: (inout Cells) throws -> T) async throws -> [T] {
        try await Self.mappingErrors { try await Self.rows(query, on: client, logger: logger, decode) }
    }

    static func rows<T>(_ query: PostgresQuery, on client: PostgresClient, logger: Logger,
                                _ decode: (inout Cells) throws -> T) async throws -> [T] {
        try await client.query(query, logger: logger).collect().map { row in
            var cells = Cells(row)
            return try decode(&cells)
        }
    }

    static func rows<T>(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger,
                                _ decode: (inout Cells) throws -> T) async throws -> [T] {
        try await connection.query(query, logger: logger).collect().map { row in
            var cells = Cells(row)
            return try decode(&cells)
        }
    }

    /// The offset-guarded UPDATE of an append (`recordAppend`) and of a final upload's verification
    /// (`recordFinalVerification`, `finalOnly`): the new offset and digest state, and with a completion its state,
    /// SHA-256 and time, only while the row is still `uploading` at `expected`. - Returns: rows changed (0 or 1).
    static func advanceOffset(id: String, from expected: Int64, to newOffset: Int64, digestState: Data,
                              completion: UploadCompletion?, at: PostgresTimestamp, finalOnly: Bool = false,
                              on connection: PostgresConnection, logger: Logger) async throws -> Int {
        let kind = finalOnly ? "AND concat = 'final'" : ""
        switch completion {
        case nil:
            return try await count("""
                UPDATE upload SET "offset" = \(newOffset), digestState = \(digestState), updatedAt = \(at)
                WHERE id = \(id) AND "offset" = \(expected) AND state = 'uploading' \(unescaped: kind) RETURNING 1
                """, on: connection, logger: logger)
        case .verified(let sha256), .failed(let sha256):
            let state: UploadState = if case .verified = completion { .verified } else { .failed }
            return try await count("""
                UPDATE upload SET "offset" = \(newOffset), digestState = \(digestState), updatedAt = \(at),
                    state = \(state.rawValue), sha256 = \(sha256), completedAt = \(at)
                WHERE id = \(id) AND "offset" = \(expected) AND state = 'uploading' \(unescaped: kind) RETURNING 1
                """, on: connection, logger: logger)
        }
    }

    /// How many rows a statement with `RETURNING 1` touched (PostgresNIO does not surface the command tag's count).
    static func count(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws -> Int {
        try await connection.query(query, logger: logger).collect().count
    }

    /// SQL narrows, the Core rule decides: dates are kept to the millisecond (`PostgresTimestamp`), so a bound
    /// compared in SQL is widened by one, as `AppDatabase` does.
    static func sqlUpperBound(_ date: Date) -> PostgresTimestamp {
        PostgresTimestamp(date.addingTimeInterval(0.001))
    }

    /// An UPDATE that matches no row, rolled back: PostgreSQL refuses any UPDATE in a read-only transaction (a hot
    /// standby, `default_transaction_read_only`) before looking for rows, and an unreachable server fails the
    /// connection. Nothing is written.
    public func probeWrite() async throws {
        struct RollBack: Error {}
        do {
            let _: Void = try await write { connection in
                try await connection.query("UPDATE setting SET value = value WHERE false", logger: logger)
                throw RollBack()
            }
        } catch is RollBack {}
    }
}

// MARK: - Users

extension PostgresMetadataStore {
    public func createUser(_ user: User) async throws -> User {
        var user = user
        user.id = try await rows("""
            INSERT INTO "user" (name, role, account, tokenHash, createdAt, revokedAt)
            VALUES (\(user.name), \(user.role.rawValue), \(user.account), \(user.tokenHash),
                    \(PostgresTimestamp(user.createdAt)), \(PostgresTimestamp.optional(user.revokedAt)))
            RETURNING id
            """) { cells in try cells.next(Int64.self) }.first
        return user
    }

    /// A pooled connection's round trip; PostgreSQL has no in-place read as SQLite does.
    public func activeUser(tokenHash: String) async throws -> User? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.user) FROM "user" WHERE tokenHash = \(tokenHash) AND revokedAt IS NULL
            """) { try User(&$0) }.first
    }

    public func revokeUser(named name: String, at date: Date) async throws -> Bool {
        let revoked = try await rows("""
            UPDATE "user" SET revokedAt = \(PostgresTimestamp(date)) WHERE name = \(name) AND revokedAt IS NULL RETURNING 1
            """) { _ in () }
        return !revoked.isEmpty
    }

    /// Names in byte order (`COLLATE "C"`), as SQLite's BINARY collation sorts them.
    public func allUsers() async throws -> [User] {
        try await rows(#"SELECT \#(unescaped: RecordColumns.user) FROM "user" ORDER BY name COLLATE "C""#) { try User(&$0) }
    }

    public func user(id: Int64) async throws -> User? {
        try await rows(#"SELECT \#(unescaped: RecordColumns.user) FROM "user" WHERE id = \#(id)"#) { try User(&$0) }.first
    }

    public func userNames(ids: Set<Int64>) async throws -> [Int64: String] {
        let pairs = try await rows(#"SELECT id, name FROM "user" WHERE id = ANY(\#(Array(ids)))"#) { cells in
            (try cells.next(Int64.self), try cells.next(String.self))
        }
        return Dictionary(uniqueKeysWithValues: pairs)
    }
}

// MARK: - Cases

extension PostgresMetadataStore {
    public func createCase(_ supportCase: SupportCase, numberGiven: Bool) async throws -> SupportCase {
        let logger = self.logger
        do {
            return try await write { connection in
                var supportCase = supportCase
                if !numberGiven {
                    // Two creations must not both take the highest number + 1 (SQLite's one writer made this free).
                    try await connection.query("LOCK TABLE supportCase IN SHARE ROW EXCLUSIVE MODE", logger: logger)
                    let highest = try await Self.rows(
                        "SELECT COALESCE(MAX(CAST(number AS BIGINT)), 0) FROM supportCase", on: connection, logger: logger
                    ) { cells in try cells.next(Int64.self) }.first ?? 0
                    supportCase.number = CaseNumber.format(highest + 1)
                }
                let c = supportCase
                try await connection.query("""
                    INSERT INTO supportCase (\(unescaped: RecordColumns.supportCase))
                    VALUES (\(c.number), \(c.account), \(c.subject), \(c.requestType.rawValue), \(c.priority.rawValue),
                            \(c.status.rawValue), \(c.subStatus), \(PostgresTimestamp(c.openedAt)),
                            \(PostgresTimestamp.optional(c.closedAt)), \(PostgresTimestamp(c.updatedAt)), \(c.legalHold),
                            \(PostgresTimestamp.optional(c.purgedAt)))
                    """, logger: logger)
                return supportCase
            }
        } catch let error as PSQLError
            where error.serverInfo?[.sqlState] == "23505" && error.serverInfo?[.constraintName] == "supportcase_pkey" {
            throw CaseNumberTaken(number: supportCase.number)
        }
    }

    public func supportCase(number: String) async throws -> SupportCase? {
        try await rows("SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase WHERE number = \(number)") { try SupportCase(&$0) }.first
    }

    public func cases(visibleTo user: User) async throws -> [SupportCase] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase
            WHERE NOT \(user.role == .customer) OR account = \(user.account) ORDER BY number
            """) { try SupportCase(&$0) }
    }

    public func cases(visibleTo user: User, after: String?, limit: Int) async throws -> [SupportCase] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase
            WHERE number > \(after ?? "") AND (NOT \(user.role == .customer) OR account = \(user.account))
            ORDER BY number LIMIT \(limit)
            """) { try SupportCase(&$0) }
    }

    public func allCases() async throws -> [SupportCase] {
        try await rows("SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase ORDER BY number") { try SupportCase(&$0) }
    }

    /// The case row is locked `FOR UPDATE` first: transitions of one case, and appends to its uploads, wait.
    public func transitionCase(
        _ number: String, kind: CaseEvent.Kind, actor: String, comment: String?, at now: Date,
        _ transition: @Sendable (SupportCase) throws -> SupportCase
    ) async throws -> SupportCase {
        let logger = self.logger
        return try await write { connection in
            guard let current = try await Self.rows("""
                SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase WHERE number = \(number) FOR UPDATE
                """, on: connection, logger: logger) { try SupportCase(&$0) }.first
            else { throw CaseFilesError.caseNotFound(number) }
            let next = try transition(current)
            try await connection.query("""
                UPDATE supportCase SET account = \(next.account), subject = \(next.subject),
                    requestType = \(next.requestType.rawValue), priority = \(next.priority.rawValue),
                    status = \(next.status.rawValue), subStatus = \(next.subStatus),
                    openedAt = \(PostgresTimestamp(next.openedAt)), closedAt = \(PostgresTimestamp.optional(next.closedAt)),
                    updatedAt = \(PostgresTimestamp(next.updatedAt)), legalHold = \(next.legalHold),
                    purgedAt = \(PostgresTimestamp.optional(next.purgedAt))
                WHERE number = \(number)
                """, logger: logger)
            if next.isClosed && !current.isClosed {
                // Closing a case revokes its drop credentials at once, in the closing transaction (issue #20).
                try await connection.query("""
                    UPDATE dropToken SET revokedAt = \(PostgresTimestamp(now)) WHERE caseNumber = \(number) AND revokedAt IS NULL
                    """, logger: logger)
            }
            try await Self.insertEvent(CaseEvent(caseNumber: number, kind: kind, status: next.status,
                                                 subStatus: next.subStatus, actor: actor, comment: comment, at: now),
                                       on: connection, logger: logger)
            return next
        }
    }

    static func insertEvent(_ event: CaseEvent, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO caseEvent (caseNumber, kind, status, subStatus, actor, comment, at)
            VALUES (\(event.caseNumber), \(event.kind.rawValue), \(event.status.rawValue), \(event.subStatus),
                    \(event.actor), \(event.comment), \(PostgresTimestamp(event.at)))
            """, logger: logger)
    }

    public func caseHistory(_ number: String) async throws -> [CaseEvent] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.caseEvent) FROM caseEvent WHERE caseNumber = \(number) ORDER BY id
            """) { try CaseEvent(&$0) }
    }

    public func caseHistory(_ number: String, after: Int64?, limit: Int) async throws -> [CaseEvent] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.caseEvent) FROM caseEvent
            WHERE caseNumber = \(number) AND id > \(after ?? 0) ORDER BY id LIMIT \(limit)
            """) { try CaseEvent(&$0) }
    }
}

// MARK: - Uploads

extension PostgresMetadataStore {
    public func uploadWithCase(id: String) async throws -> (Upload, SupportCase)? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.qualified(RecordColumns.upload, "u")),
                   \(unescaped: RecordColumns.qualified(RecordColumns.supportCase, "c"))
            FROM upload u JOIN supportCase c ON c.number = u.caseNumber WHERE u.id = \(id)
            """) { cells in (try Upload(&cells), try SupportCase(&cells)) }.first
    }

    public func createUpload(_ upload: Upload) async throws {
        let logger = self.logger
        try await write { connection in try await Self.insertUpload(upload, on: connection, logger: logger) }
    }

    static func insertUpload(_ u: Upload, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO upload (\(unescaped: RecordColumns.upload))
            VALUES (\(u.id), \(u.caseNumber), \(u.filename), \(u.filetype), \(u.rawMetadata), \(u.length), \(u.offset),
                    \(u.state.rawValue), \(u.declaredSHA256), \(u.digestState), \(u.sha256), \(u.createdBy),
                    \(PostgresTimestamp(u.createdAt)), \(PostgresTimestamp(u.updatedAt)),
                    \(PostgresTimestamp.optional(u.completedAt)), \(PostgresTimestamp.optional(u.purgedAt)),
                    \(u.concat?.rawValue), \(u.createdByDropToken))
            """, logger: logger)
    }

    /// `pg_advisory_xact_lock`'s key for the transactions that decide from several uploads' rows at once: a
    /// creation checked against the quotas and the reservations, a final upload's creation and the expiry sweep.
    /// SQLite's one writer ran them one after another; here this lock does, so two creations at the same instant
    /// are counted one after the other (READ COMMITTED: each statement after the lock sees every creation committed
    /// before it), and a partial upload cannot expire while a final upload takes it. Appends, completions and
    /// terminations only lower what is counted, so they do not take it. Any fixed number ("uploads!" in ASCII).
    static let uploadSetLock: Int64 = 0x7570_6C6F_6164_7321

    static func lockUploadSet(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(\(uploadSetLock))", logger: logger)
    }

    /// The usage and the reservations are read in the insert's own transaction, after `uploadSetLock`: no other
    /// creation can come between the check and the insert (AppDatabase's are on SQLite's one writer).
    public func createUpload(
        _ upload: Upload, admitting admit: @Sendable (UploadUsage, _ reservedBytes: Int64) throws -> Void
    ) async throws {
        let logger = self.logger
        try await write { connection in
            try await Self.lockUploadSet(on: connection, logger: logger)
            try admit(try await Self.uploadUsage(caseNumber: upload.caseNumber, userID: upload.createdBy,
                                                 on: connection, logger: logger),
                      try await Self.reservedBytes(on: connection, logger: logger))
            try await Self.insertUpload(upload, on: connection, logger: logger)
        }
    }

    public func upload(id: String) async throws -> Upload? {
        try await rows("SELECT \(unescaped: RecordColumns.upload) FROM upload WHERE id = \(id)") { try Upload(&$0) }.first
    }

    public func setUploadLength(id: String, length: Int64, at date: Date) async throws {
        let changed = try await rows("""
            UPDATE upload SET length = \(length), updatedAt = \(PostgresTimestamp(date))
            WHERE id = \(id) AND length IS NULL AND "offset" <= \(length) RETURNING 1
            """) { _ in () }.count
        if changed != 1 {
            throw UploadChangedUnderWriter(id: id, detail: "length already set or below the offset")
        }
    }

    /// The case's row is read `FOR SHARE` first, so this commit and a closing transaction are ordered: one that
    /// closed the case first is seen (and nothing is committed); one that comes later waits for this one. Then the
    /// `offset = expected` guard makes a lost race fail instead of skipping bytes, and the schema's CHECKs refuse
    /// `offset > length` and `verified` without a SHA-256 (the transaction is then rolled back).
    public func recordAppend(
        id: String, by sender: Int64, from expectedOffset: Int64, to newOffset: Int64, digestState: Data,
        completion: UploadCompletion?, at date: Date
    ) async throws {
        let logger = self.logger
        try await write { connection in
            let status = try await Self.rows("""
                SELECT c.number, c.status FROM supportCase c JOIN upload u ON u.caseNumber = c.number
                WHERE u.id = \(id) FOR SHARE OF c
                """, on: connection, logger: logger) { cells in (try cells.next(String.self), try cells.next(String.self)) }
            if let found = status.first, found.1 == CaseStatus.closed.rawValue {
                throw CaseClosedDuringUpload(caseNumber: found.0)
            }
            let at = PostgresTimestamp(date)
            let changed = try await Self.advanceOffset(id: id, from: expectedOffset, to: newOffset, digestState: digestState,
                                                       completion: completion, at: at, on: connection, logger: logger)
            if changed != 1 {
                throw UploadChangedUnderWriter(id: id, detail: "changed under its writer (not at offset \(expectedOffset) or no longer uploading)")
            }
            if newOffset > expectedOffset {
                try await connection.query("""
                    INSERT INTO uploadAppend (uploadID, fromOffset, toOffset, userID, at)
                    VALUES (\(id), \(expectedOffset), \(newOffset), \(sender), \(at))
                    """, logger: logger)
            }
            if completion != nil { try await Self.enqueueCompletionEvent(uploadID: id, at: date, on: connection, logger: logger) }
        }
    }

    public func appends(uploadID: String) async throws -> [AppendRecord] {
        try await rows("""
            SELECT uploadID, fromOffset, toOffset, userID, at FROM uploadAppend WHERE uploadID = \(uploadID)
            ORDER BY fromOffset, id
            """) { cells in
            AppendRecord(uploadID: try cells.next(), fromOffset: try cells.next(), toOffset: try cells.next(),
                         userID: try cells.next(), at: try cells.date())
        }
    }

    public func reservedBytes() async throws -> Int64 {
        let logger = self.logger
        return try await Self.mappingErrors {
            try await client.withConnection { connection in try await Self.reservedBytes(on: connection, logger: logger) }
        }
    }

    public func uploadUsage(caseNumber: String, userID: Int64) async throws -> UploadUsage {
        let logger = self.logger
        return try await Self.mappingErrors {
            try await client.withConnection { connection in
                try await Self.uploadUsage(caseNumber: caseNumber, userID: userID, on: connection, logger: logger)
            }
        }
    }

    /// The one SQL of `reservedBytes` (AppDatabase's), for a read and for `createUpload(_:admitting:)`'s transaction.
    /// A final upload reserves nothing: its bytes are its partials'.
    static func reservedBytes(on connection: PostgresConnection, logger: Logger) async throws -> Int64 {
        try await rows("""
            SELECT COALESCE(SUM(length - "offset"), 0)::BIGINT FROM upload WHERE state = 'uploading' AND length IS NOT NULL
                AND concat IS DISTINCT FROM 'final'
            """, on: connection, logger: logger) { cells in try cells.next(Int64.self) }.first ?? 0
    }

    /// The one SQL of `uploadUsage` (AppDatabase's): a case's bytes count its verified attachments' index bytes and
    /// leave final uploads out.
    static func uploadUsage(caseNumber: String, userID: Int64, on connection: PostgresConnection,
                            logger: Logger) async throws -> UploadUsage {
        let row = try await rows("""
            SELECT
                (SELECT COUNT(*) FROM upload WHERE state = 'uploading' AND createdBy = \(userID)),
                (SELECT COUNT(*) FROM upload WHERE state = 'uploading' AND caseNumber = \(caseNumber)),
                (SELECT COALESCE(SUM(COALESCE(length, "offset")), 0)::BIGINT FROM upload
                 WHERE caseNumber = \(caseNumber) AND state IN ('uploading', 'verified') AND concat IS DISTINCT FROM 'final')
                + (SELECT COALESCE(SUM(b.indexBytes), 0)::BIGINT FROM bundleIndex b JOIN upload u ON u.id = b.attachmentID
                   WHERE u.caseNumber = \(caseNumber) AND u.state = 'verified')
            """, on: connection, logger: logger) { cells in
            (try cells.next(Int64.self), try cells.next(Int64.self), try cells.next(Int64.self))
        }.first
        return UploadUsage(unfinishedByUser: Int(row?.0 ?? 0), unfinishedInCase: Int(row?.1 ?? 0), caseBytes: row?.2 ?? 0)
    }

    public func declareSHA256(id: String, sha256: String) async throws {
        _ = try await rows("UPDATE upload SET declaredSHA256 = \(sha256) WHERE id = \(id) AND declaredSHA256 IS NULL") { _ in () }
    }

    public func recordStoredObject(uploadID: String, etag: String) async throws {
        _ = try await rows("UPDATE upload SET objectETag = \(etag) WHERE id = \(uploadID) AND state = 'verified'") { _ in () }
    }

    public func terminateUpload(id: String, at date: Date) async throws {
        _ = try await rows("""
            UPDATE upload SET state = 'terminated', updatedAt = \(PostgresTimestamp(date)) WHERE id = \(id) AND state = 'uploading'
            """) { _ in () }
    }

    /// Partial uploads are parts of a final upload, never attachments of their own (tus concatenation).
    public func uploads(caseNumber: String) async throws -> [Upload] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.upload) FROM upload
            WHERE caseNumber = \(caseNumber) AND concat IS DISTINCT FROM 'partial'
            ORDER BY createdAt, id COLLATE "C"
            """) { try Upload(&$0) }
    }

    /// A page of the case's listing, never partial uploads. The cursor's milliseconds are a date on the stored
    /// millisecond grid, so the row comparison (postgresql.org/docs/15/functions-comparisons.html §9.24.5) is exact.
    public func caseListing(_ caseNumber: String, after: ListingPosition?, limit: Int) async throws -> [Upload] {
        guard let after else {
            return try await rows("""
                SELECT \(unescaped: RecordColumns.upload) FROM upload
                WHERE caseNumber = \(caseNumber) AND state IN ('verified', 'purged', 'uploading')
                    AND concat IS DISTINCT FROM 'partial'
                ORDER BY createdAt, id COLLATE "C" LIMIT \(limit)
                """) { try Upload(&$0) }
        }
        let createdAt = PostgresTimestamp(Date(timeIntervalSince1970: Double(after.createdAtMilliseconds) / 1000))
        return try await rows("""
            SELECT \(unescaped: RecordColumns.upload) FROM upload
            WHERE caseNumber = \(caseNumber) AND state IN ('verified', 'purged', 'uploading')
                AND concat IS DISTINCT FROM 'partial'
                AND (createdAt, id COLLATE "C") > (\(createdAt), \(after.id) COLLATE "C")
            ORDER BY createdAt, id COLLATE "C" LIMIT \(limit)
            """) { try Upload(&$0) }
    }

    /// Only an unfinished or failed upload goes (never a verified one); its appends go with it (ON DELETE CASCADE).
    public func deleteFailedCreation(id: String) async throws -> Bool {
        try await rows("DELETE FROM upload WHERE id = \(id) AND state IN ('uploading', 'failed') RETURNING 1") { _ in () }
            .count == 1
    }

    /// The uploads the expiry sweep may expire (AppDatabase's `expirable`): unfinished ones, and complete partial
    /// uploads no final upload uses yet; never a final upload, nor a partial that is part of one.
    static let expirable = """
        ((state = 'uploading' AND concat IS DISTINCT FROM 'final')
         OR (state = 'verified' AND concat = 'partial' AND id NOT IN (SELECT partialID FROM finalPart)))
        """

    /// One transaction under `uploadSetLock` (a final upload cannot take a partial meanwhile): the rows SQL narrows
    /// to (`Upload.expiryCandidatesBound`), kept if `Upload.isExpired` says so, become `expired`, each with its
    /// `upload.failed` event. Nothing while a backup holds the lease.
    public func expireUploads(at now: Date, expiry: TimeInterval) async throws -> [String] {
        let bound = Self.sqlUpperBound(Upload.expiryCandidatesBound(at: now, expiry: expiry))
        let logger = self.logger
        return try await write { connection in
            try await Self.lockUploadSet(on: connection, logger: logger)
            if try await Self.backupLease(at: now, on: connection, logger: logger) != nil { return [] }
            let candidates = try await Self.rows("""
                SELECT id, updatedAt FROM upload WHERE \(unescaped: Self.expirable) AND updatedAt <= \(bound)
                ORDER BY updatedAt, id COLLATE "C"
                """, on: connection, logger: logger) { cells in (try cells.next(String.self), try cells.date()) }
            let ids = candidates.filter { Upload.isExpired(lastProgress: $0.1, at: now, expiry: expiry) }.map(\.0)
            guard !ids.isEmpty else { return [] }
            let expired = try await Self.rows("""
                UPDATE upload SET state = 'expired', updatedAt = \(PostgresTimestamp(now))
                WHERE id = ANY(\(ids)) AND \(unescaped: Self.expirable) RETURNING id, caseNumber, filename, length
                """, on: connection, logger: logger) { cells in
                (id: try cells.next(String.self), caseNumber: try cells.next(String.self),
                 filename: try cells.next(String.self), length: try cells.next(Int64?.self))
            }
            for row in expired {
                try await Self.enqueue(.make(.uploadFailed, .init(
                    caseNumber: row.caseNumber, uploadID: row.id, filename: row.filename, length: row.length,
                    reason: "expired"), at: now), on: connection, logger: logger)
            }
            let changed = Set(expired.map(\.id))
            return ids.filter(changed.contains)
        }
    }

    public func uploadStates() async throws -> [String: UploadState] {
        let pairs = try await rows("SELECT id, state FROM upload") { cells in
            (try cells.next(String.self), UploadState(rawValue: try cells.next(String.self)))
        }
        var states: [String: UploadState] = [:]
        for (id, state) in pairs { if let state { states[id] = state } }
        return states
    }
}

// MARK: - Downloads and signed links

extension PostgresMetadataStore {
    public func recordDownload(_ download: Download, settlingLink nonce: String?, reserved: Int64) async throws {
        let logger = self.logger
        let d = download
        try await write { connection in
            try await connection.query("""
                INSERT INTO download (uploadID, userID, startedAt, finishedAt, bytesSent, range, status, completed, entryPath)
                VALUES (\(d.uploadID), \(d.userID), \(PostgresTimestamp(d.startedAt)), \(PostgresTimestamp(d.finishedAt)),
                        \(d.bytesSent), \(d.range), \(d.status), \(d.completed), \(d.entryPath))
                """, logger: logger)
            if let nonce {
                try await connection.query("""
                    UPDATE downloadLink SET bytesServed = bytesServed - \(reserved) + \(d.bytesSent) WHERE nonce = \(nonce)
                    """, logger: logger)
            }
        }
    }

    public func downloads(caseNumber: String?, attachmentID: String?, limit: Int) async throws -> [DownloadEntry] {
        try await rows("""
            SELECT d.id, d.uploadID, u.caseNumber, u.filename, usr.name, d.startedAt, d.finishedAt, d.bytesSent, d.range,
                   d.status, d.completed, d.entryPath
            FROM download d JOIN upload u ON u.id = d.uploadID JOIN "user" usr ON usr.id = d.userID
            WHERE (\(caseNumber)::TEXT IS NULL OR u.caseNumber = \(caseNumber))
              AND (\(attachmentID)::TEXT IS NULL OR d.uploadID = \(attachmentID))
            ORDER BY d.id DESC LIMIT \(limit)
            """) { cells in
            DownloadEntry(id: try cells.next(), attachmentID: try cells.next(), caseNumber: try cells.next(),
                          filename: try cells.next(), user: try cells.next(), startedAt: try cells.date(),
                          finishedAt: try cells.date(), bytesSent: try cells.next(), range: try cells.next(),
                          status: Int(try cells.next(Int32.self)), completed: try cells.next(), entryPath: try cells.next())
        }
    }

    public func createDownloadLink(_ link: DownloadLink) async throws {
        _ = try await rows("""
            INSERT INTO downloadLink (\(unescaped: RecordColumns.downloadLink))
            VALUES (\(link.nonce), \(link.uploadID), \(link.userID), \(PostgresTimestamp(link.expiresAt)),
                    \(PostgresTimestamp.optional(link.issuedAt)), \(link.bytesServed))
            """) { _ in () }
    }

    public func downloadLink(nonce: String, uploadID: String) async throws -> DownloadLink? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.downloadLink) FROM downloadLink WHERE nonce = \(nonce) AND uploadID = \(uploadID)
            """) { try DownloadLink(&$0) }.first
    }

    /// One conditional UPDATE: concurrent requests on one link can never together go past the budget (the WHERE
    /// is re-checked on the row as the previous request left it).
    public func reserveLinkBytes(nonce: String, count: Int64, budget: Int64) async throws -> Bool {
        try await rows("""
            UPDATE downloadLink SET bytesServed = bytesServed + \(count)
            WHERE nonce = \(nonce) AND bytesServed + \(count) <= \(budget) RETURNING 1
            """) { _ in () }.count == 1
    }

    /// The rule `DownloadLinks.isLive` applies (see `AppDatabase.pruneExpiredLinks`).
    public func pruneExpiredLinks(at now: Date, maxLifetime: TimeInterval) async throws -> Int {
        try await rows("""
            DELETE FROM downloadLink
            WHERE expiresAt < \(PostgresTimestamp(now))
               OR (issuedAt IS NOT NULL AND issuedAt < \(PostgresTimestamp(now.addingTimeInterval(-maxLifetime))))
            RETURNING 1
            """) { _ in () }.count
    }
}

// MARK: - Settings

extension PostgresMetadataStore {
    public func retentionSettings() async throws -> RetentionSettings {
        let pairs = try await rows("SELECT key, value FROM setting") { cells in
            (key: try cells.next(String.self), value: try cells.next(String.self))
        }
        return RetentionSettings(stored: pairs)
    }

    public func setSetting(_ key: String, _ value: String) async throws {
        _ = try await rows("""
            INSERT INTO setting (key, value) VALUES (\(key), \(value)) ON CONFLICT (key) DO UPDATE SET value = excluded.value
            """) { _ in () }
    }
}

// MARK: - Retention purge

extension PostgresMetadataStore {
    /// SQL narrows to closed, unpurged cases closed by `PurgeEligibility.closedBy` (widened to the millisecond);
    /// `PurgeEligibility.of` keeps the due and held ones. One snapshot for the cases and their uploads.
    public func casesDueForPurge(asOf: Date, settings: RetentionSettings) async throws -> [(SupportCase, [Upload])] {
        let bound = Self.sqlUpperBound(PurgeEligibility.closedBy(asOf: asOf, settings: settings))
        let owners = UploadState.blobOwners.map(\.rawValue)
        let logger = self.logger
        return try await write("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") { connection in
            let cases = try await Self.rows("""
                SELECT \(unescaped: RecordColumns.supportCase) FROM supportCase
                WHERE status = 'Closed' AND closedAt <= \(bound) AND purgedAt IS NULL ORDER BY number
                """, on: connection, logger: logger) { try SupportCase(&$0) }
                .filter { PurgeEligibility.of($0, asOf: asOf, settings: settings) != .notDue }
            var due: [(SupportCase, [Upload])] = []
            for supportCase in cases {
                due.append((supportCase, try await Self.rows("""
                    SELECT \(unescaped: RecordColumns.upload) FROM upload
                    WHERE caseNumber = \(supportCase.number) AND state = ANY(\(owners)) ORDER BY createdAt
                    """, on: connection, logger: logger) { try Upload(&$0) }))
            }
            return due
        }
    }

    public func closeInterruptedPurgeRuns(at now: Date) async throws {
        _ = try await rows("""
            UPDATE purgeRun SET state = 'interrupted', finishedAt = \(PostgresTimestamp(now)),
                itemsPurged = (SELECT COUNT(*) FROM purgeItem WHERE runID = purgeRun.id),
                bytesFreed = (SELECT COALESCE(SUM(bytes), 0) FROM purgeItem WHERE runID = purgeRun.id),
                casesPurged = (SELECT COUNT(DISTINCT caseNumber) FROM purgeItem WHERE runID = purgeRun.id)
            WHERE state = 'running'
            """) { _ in () }
    }

    public func insertPurgeRun(_ run: PurgeRun) async throws -> PurgeRun {
        var run = run
        let r = run
        run.id = try await rows("""
            INSERT INTO purgeRun (startedAt, finishedAt, asOf, retentionDays, trigger, state, casesPurged, itemsPurged,
                                  bytesFreed, casesSkippedForHold, itemsSkippedForHold, errors)
            VALUES (\(PostgresTimestamp(r.startedAt)), \(PostgresTimestamp.optional(r.finishedAt)), \(PostgresTimestamp(r.asOf)),
                    \(r.retentionDays), \(r.trigger.rawValue), \(r.state.rawValue), \(r.casesPurged), \(r.itemsPurged),
                    \(r.bytesFreed), \(r.casesSkippedForHold), \(r.itemsSkippedForHold), \(r.errors))
            RETURNING id
            """) { cells in try cells.next(Int64.self) }.first
        return run
    }

    public func updatePurgeRun(_ run: PurgeRun) async throws {
        let r = run
        _ = try await rows("""
            UPDATE purgeRun SET startedAt = \(PostgresTimestamp(r.startedAt)), finishedAt = \(PostgresTimestamp.optional(r.finishedAt)),
                asOf = \(PostgresTimestamp(r.asOf)), retentionDays = \(r.retentionDays), trigger = \(r.trigger.rawValue),
                state = \(r.state.rawValue), casesPurged = \(r.casesPurged), itemsPurged = \(r.itemsPurged),
                bytesFreed = \(r.bytesFreed), casesSkippedForHold = \(r.casesSkippedForHold),
                itemsSkippedForHold = \(r.itemsSkippedForHold), errors = \(r.errors)
            WHERE id = \(r.id)
            """) { _ in () }
    }

    /// The tombstone and its audit row in one transaction; the blob is removed afterwards (a crash in between leaves
    /// an orphan file that the sweep removes).
    public func purgeUpload(_ upload: Upload, runID: Int64, at now: Date) async throws -> Bool {
        let owners = UploadState.blobOwners.map(\.rawValue)
        let logger = self.logger
        return try await write { connection in
            if let lease = try await Self.backupLease(at: now, on: connection, logger: logger) {
                throw BackupInProgress(until: lease.expiresAt)
            }
            let changed = try await Self.count("""
                UPDATE upload SET state = 'purged', purgedAt = \(PostgresTimestamp(now))
                WHERE id = \(upload.id) AND state = ANY(\(owners)) RETURNING 1
                """, on: connection, logger: logger)
            guard changed == 1 else { return false }
            try await connection.query("DELETE FROM bundleIndex WHERE attachmentID = \(upload.id)", logger: logger)
            try await connection.query("""
                INSERT INTO purgeItem (runID, caseNumber, uploadID, filename, previousState, bytes, at)
                VALUES (\(runID), \(upload.caseNumber), \(upload.id), \(upload.filename), \(upload.state.rawValue),
                        \(upload.offset), \(PostgresTimestamp(now)))
                """, logger: logger)
            return true
        }
    }

    public func markCasePurged(_ supportCase: SupportCase, policy: String, at now: Date) async throws {
        let logger = self.logger
        try await write { connection in
            let marked = try await Self.count("""
                UPDATE supportCase SET purgedAt = \(PostgresTimestamp(now)) WHERE number = \(supportCase.number) AND purgedAt IS NULL
                RETURNING 1
                """, on: connection, logger: logger)
            if marked == 1 {
                let totals = try await Self.rows("""
                    SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM purgeItem WHERE caseNumber = \(supportCase.number)
                    """, on: connection, logger: logger) { cells in (try cells.next(Int64.self), try cells.next(Int64.self)) }.first
                try await Self.enqueue(.make(.casePurged, .init(
                    caseNumber: supportCase.number, policy: policy, itemsPurged: totals.map { Int($0.0) },
                    bytesPurged: totals?.1), at: now), on: connection, logger: logger)
            }
            try await Self.insertEvent(CaseEvent(caseNumber: supportCase.number, kind: .purged, status: supportCase.status,
                                                 subStatus: supportCase.subStatus, actor: "retention", comment: policy, at: now),
                                       on: connection, logger: logger)
        }
    }

    public func purgeRuns(limit: Int) async throws -> [PurgeRun] {
        try await rows("SELECT \(unescaped: RecordColumns.purgeRun) FROM purgeRun ORDER BY id DESC LIMIT \(limit)") { try PurgeRun(&$0) }
    }

    public func purgeItems(runID: Int64) async throws -> [PurgeItem] {
        try await rows("SELECT \(unescaped: RecordColumns.purgeItem) FROM purgeItem WHERE runID = \(runID) ORDER BY id") { try PurgeItem(&$0) }
    }
}
