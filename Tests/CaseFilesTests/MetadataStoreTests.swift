@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesPostgres
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import GRDB
import PostgresNIO
import Testing

/// The metadata store on its own (a real SQLite file in a temp directory, or with `CASEFILES_TEST_DATABASE` a
/// fresh PostgreSQL database: `TestDatabase`; no HTTP): the SQL guards of an append, case transitions, purge
/// candidates and the expiry sweep, each against the one rule it applies.
@Suite struct MetadataStoreTests {
    static let expiry: TimeInterval = 3600
    /// A time on SQLite's millisecond grid, as every stored date is.
    static let t0 = Date(timeIntervalSince1970: 1_790_000_000)

    /// A migrated store and a fresh temp directory (for blobs): the SQLite file in it, opened on a blocking thread
    /// (`open` is `noasync`), or a new PostgreSQL database (`TestDatabase`).
    static func openStore() async throws -> (any MetadataStore, URL) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("casefiles-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        if let postgres = try await TestDatabase.freshPostgres() { return (postgres, root) }
        let database = try await testWorkers.storage.blockingIO {
            try AppDatabase.open(path: root.appendingPathComponent("test.sqlite").path) { _ in }
        }
        return (database, root)
    }

    /// A store with one user (id 1) and one open case, 00000001.
    static func seeded() async throws -> (any MetadataStore, URL) {
        let (database, root) = try await openStore()
        let user = try await database.createUser(
            User(name: "carol", role: .customer, account: "ACME", tokenHash: "h", createdAt: t0))
        #expect(user.id == 1)  // didInsert
        _ = try await database.createCase(
            try CaseLifecycle.open(account: "ACME", subject: "s", number: "1", priority: nil, requestType: nil, at: t0),
            numberGiven: true)
        return (database, root)
    }

    static func upload(_ id: String, case number: String = "00000001", length: Int64? = 10, offset: Int64 = 0,
                       state: UploadState = .uploading, sha256: String? = nil, at date: Date = t0) -> Upload {
        Upload(id: id, caseNumber: number, filename: "\(id).log", rawMetadata: "", length: length, offset: offset,
               state: state, digestState: Data([1]), sha256: sha256, createdBy: 1, createdAt: date, updatedAt: date)
    }

    static func close(_ database: any MetadataStore, _ number: String, at date: Date) async throws {
        _ = try await database.transitionCase(number, kind: .closed, actor: "t", comment: nil, at: date) {
            try CaseLifecycle.close($0, subStatus: "Resolved", by: CaseActor(operator: "t"), at: date)
        }
    }

    /// A CHECK constraint refused the write: SQLITE_CONSTRAINT_CHECK, or PostgreSQL's SQLSTATE 23514
    /// (check_violation, postgresql.org/docs/15/errcodes-appendix.html).
    static func isCheckViolation(_ error: any Error) -> Bool {
        if let error = error as? DatabaseError { return error.extendedResultCode == .SQLITE_CONSTRAINT_CHECK }
        return (error as? PSQLError)?.serverInfo?[.sqlState] == "23514"
    }

    // MARK: - recordAppend's guards and outcomes

    @Test func anAppendCommitsOnlyFromTheStoredOffset() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("u1"))
        await #expect(throws: UploadChangedUnderWriter.self) {
            try await database.recordAppend(id: "u1", by: 1, from: 5, to: 8, digestState: Data([2]), completion: nil, at: Self.t0)
        }
        #expect(try await database.upload(id: "u1")?.offset == 0)
        try await database.recordAppend(id: "u1", by: 1, from: 0, to: 4, digestState: Data([2]), completion: nil,
                                        at: Self.t0 + 1)
        let stored = try #require(try await database.upload(id: "u1"))
        #expect(stored.offset == 4 && stored.digestState == Data([2]) && stored.updatedAt == Self.t0 + 1)
        #expect(stored.state == .uploading)
        // The same append again (a lost race): refused, nothing moves.
        await #expect(throws: UploadChangedUnderWriter.self) {
            try await database.recordAppend(id: "u1", by: 1, from: 0, to: 4, digestState: Data([3]), completion: nil, at: Self.t0)
        }
        #expect(try await database.upload(id: "u1")?.digestState == Data([2]))
    }

    @Test func theSchemaRefusesAnOffsetPastTheLength() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("u1", length: 10))
        let error = await #expect(throws: (any Error).self) {
            try await database.recordAppend(id: "u1", by: 1, from: 0, to: 11, digestState: Data([2]), completion: nil, at: Self.t0)
        }
        #expect(error.map(Self.isCheckViolation) == true)
        #expect(try await database.upload(id: "u1")?.offset == 0)
    }

    @Test func theSchemaRefusesAVerifiedUploadWithoutItsSHA256OrLength() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        // Verified needs a SHA-256 ...
        let missing = await #expect(throws: (any Error).self) {
            try await database.createUpload(Self.upload("u1", length: 10, offset: 10, state: .verified, sha256: nil))
        }
        #expect(missing.map(Self.isCheckViolation) == true)
        // ... and every byte: completing short of the length is refused and rolled back.
        try await database.createUpload(Self.upload("u2", length: 10))
        let short = await #expect(throws: (any Error).self) {
            try await database.recordAppend(id: "u2", by: 1, from: 0, to: 6, digestState: Data([2]),
                                            completion: .verified(sha256: "ab"), at: Self.t0)
        }
        #expect(short.map(Self.isCheckViolation) == true)
        let stored = try #require(try await database.upload(id: "u2"))
        #expect(stored.offset == 0 && stored.state == .uploading && stored.sha256 == nil)
        #expect(try await database.upload(id: "u1") == nil)
    }

    @Test func theSchemaRefusesAnObjectETagLongerThan256Characters() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("u1", length: 10, offset: 10, state: .verified, sha256: "aa"))
        try await database.recordStoredObject(uploadID: "u1", etag: "\"" + String(repeating: "e", count: 254) + "\"")
        let long = await #expect(throws: (any Error).self) {
            try await database.recordStoredObject(uploadID: "u1", etag: String(repeating: "e", count: 257))
        }
        #expect(long.map(Self.isCheckViolation) == true)
    }

    @Test func theLastAppendCompletesInTheSameTransaction() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("ok", length: 10))
        try await database.createUpload(Self.upload("bad", length: 10))
        let done = Self.t0 + 2
        try await database.recordAppend(id: "ok", by: 1, from: 0, to: 10, digestState: Data([2]),
                                        completion: .verified(sha256: "aa"), at: done)
        try await database.recordAppend(id: "bad", by: 1, from: 0, to: 10, digestState: Data([2]),
                                        completion: .failed(sha256: "bb"), at: done)
        let ok = try #require(try await database.upload(id: "ok"))
        #expect(ok.state == .verified && ok.sha256 == "aa" && ok.offset == 10 && ok.completedAt == done)
        let bad = try #require(try await database.upload(id: "bad"))
        #expect(bad.state == .failed && bad.sha256 == "bb" && bad.completedAt == done)
        // A finished upload takes no more bytes.
        await #expect(throws: UploadChangedUnderWriter.self) {
            try await database.recordAppend(id: "ok", by: 1, from: 10, to: 10, digestState: Data([3]), completion: nil, at: done)
        }
    }

    @Test func aClosedCaseRefusesAnAppend() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("u1", length: 10))
        try await Self.close(database, "00000001", at: Self.t0 + 1)
        let error = await #expect(throws: CaseClosedDuringUpload.self) {
            try await database.recordAppend(id: "u1", by: 1, from: 0, to: 4, digestState: Data([2]), completion: nil, at: Self.t0 + 2)
        }
        #expect(error?.caseNumber == "00000001")
        #expect(try await database.upload(id: "u1")?.offset == 0)
    }

    // MARK: - Case transitions

    @Test func aTransitionWritesTheCaseAndItsEventOrNothing() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await Self.close(database, "00000001", at: Self.t0 + 1)
        let closed = try #require(try await database.supportCase(number: "00000001"))
        #expect(closed.status == .closed && closed.subStatus == "Resolved" && closed.closedAt == Self.t0 + 1)
        #expect(try await database.caseHistory("00000001").map(\.kind) == [.closed])
        // A refused transition (closing twice) writes neither the case nor an event.
        let refused = await #expect(throws: CaseFilesError.self) { try await Self.close(database, "00000001", at: Self.t0 + 2) }
        #expect(refused?.code == "case_already_closed")
        #expect(try await database.caseHistory("00000001").count == 1)
        #expect(try await database.supportCase(number: "00000001")?.closedAt == Self.t0 + 1)
        let missing = await #expect(throws: CaseFilesError.self) { try await Self.close(database, "00000009", at: Self.t0) }
        #expect(missing?.code == "case_not_found")
    }

    // MARK: - Purge eligibility and candidates

    @Test func purgeEligibilityStartsAtTheMillisecondTheRetentionPeriodEnds() {
        let settings = RetentionSettings(retentionDays: 30, reopenDays: 30)
        // Closing times are kept to the millisecond: the boundary is a whole millisecond.
        let closedAt = Self.t0
        var supportCase = SupportCase(number: "00000001", account: "A", subject: "s", requestType: .support,
                                      priority: .low, status: .closed, subStatus: "Resolved", openedAt: closedAt,
                                      closedAt: closedAt, updatedAt: closedAt)
        let dueAt = closedAt + 30 * 86400
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt, settings: settings) == .due)
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt - 0.001, settings: settings) == .notDue)
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt + 0.001, settings: settings) == .due)
        // A closing time read back from the store, rounded to its millisecond, is due at T + 30 days exactly.
        let closedAtUnrounded = closedAt + 0.0004
        #expect(PurgeEligibility.of(supportCase, asOf: closedAtUnrounded + 30 * 86400, settings: settings) == .due)
        supportCase.legalHold = true
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt, settings: settings) == .held)
        supportCase.legalHold = false
        supportCase.purgedAt = dueAt
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt + 86400, settings: settings) == .notDue)
        supportCase.purgedAt = nil
        supportCase.status = .open
        supportCase.closedAt = nil
        #expect(PurgeEligibility.of(supportCase, asOf: dueAt + 86400, settings: settings) == .notDue)
    }

    @Test func purgeCandidatesAreTheCasesTheRuleCallsDueOrHeldWithTheUploadsThatOwnABlob() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        for number in ["2", "3", "4"] {
            _ = try await database.createCase(
                try CaseLifecycle.open(account: "ACME", subject: "s", number: number, priority: nil, requestType: nil,
                                        at: Self.t0), numberGiven: true)
        }
        for (id, state) in [("up", UploadState.uploading), ("ver", .verified), ("fail", .failed),
                            ("term", .terminated), ("exp", .expired)] {
            try await database.createUpload(Self.upload(id, length: 10, offset: state == .verified ? 10 : 0,
                                                        state: state, sha256: state == .verified ? "aa" : nil))
        }
        let closedAt = Self.t0 + 10
        try await Self.close(database, "00000001", at: closedAt)
        try await Self.close(database, "00000002", at: closedAt)
        _ = try await database.transitionCase("00000002", kind: .hold, actor: "t", comment: nil, at: closedAt) {
            var held = $0
            held.legalHold = true
            return held
        }
        try await Self.close(database, "00000003", at: closedAt + 0.001)  // a millisecond later
        // 00000004 stays open.
        let settings = RetentionSettings(retentionDays: 30, reopenDays: 30)
        let dueAt = closedAt + settings.retention
        #expect(try await database.casesDueForPurge(asOf: dueAt - 0.001, settings: settings).isEmpty)
        let due = try await database.casesDueForPurge(asOf: dueAt, settings: settings)
        #expect(due.map(\.0.number) == ["00000001", "00000002"])
        #expect(due[0].1.map(\.id) == ["up", "ver"])
        #expect(UploadState.blobOwners == [.uploading, .verified])

        // The dry run's plan splits them by the same rule (the default settings are 30 days).
        let plan = try await RetentionPurge(services: AppServices(
            database: database, blobs: try FileBlobStore(root: root, threads: testWorkers.storage), linkKeys: LinkKeyFile(root: root),
            bulkWork: testWorkers.bulkWork)).plan(asOf: dueAt)
        #expect(plan.due.map(\.supportCase.number) == ["00000001"])
        #expect(plan.held.map(\.supportCase.number) == ["00000002"])

        // The tombstone: once per upload, only while it owns a blob.
        let run = try await database.insertPurgeRun(PurgeRun(
            startedAt: dueAt, asOf: dueAt, retentionDays: 30, trigger: .cli, state: .running, casesPurged: 0,
            itemsPurged: 0, bytesFreed: 0, casesSkippedForHold: 0, itemsSkippedForHold: 0))
        #expect(run.id == 1)  // didInsert
        let verified = try #require(try await database.upload(id: "ver"))
        #expect(try await database.purgeUpload(verified, runID: 1, at: dueAt))
        #expect(try await database.purgeUpload(verified, runID: 1, at: dueAt) == false)
        let failed = try #require(try await database.upload(id: "fail"))
        #expect(try await database.purgeUpload(failed, runID: 1, at: dueAt) == false)
        #expect(try await database.upload(id: "ver")?.state == .purged)
        #expect(try await database.purgeItems(runID: 1).map(\.uploadID) == ["ver"])
        try await database.closeInterruptedPurgeRuns(at: dueAt + 1)
        let closedRun = try #require(try await database.purgeRuns(limit: 1).first)
        #expect(closedRun.state == .interrupted && closedRun.trigger == .cli && closedRun.itemsPurged == 1
                && closedRun.bytesFreed == 10)
    }

    // MARK: - Upload expiry

    @Test func anUploadExpiresAtTheExactInstantNotANanosecondBefore() {
        let lastProgress = Date(timeIntervalSinceReferenceDate: 1000)  // nanoseconds resolve here
        let expiresAt = lastProgress + Self.expiry
        #expect(Upload.expiresAt(lastProgress: lastProgress, expiry: Self.expiry) == expiresAt)
        #expect(Upload.isExpired(lastProgress: lastProgress, at: expiresAt, expiry: Self.expiry))
        #expect(!Upload.isExpired(lastProgress: lastProgress, at: expiresAt - 1e-9, expiry: Self.expiry))
        #expect(Upload.isExpired(lastProgress: lastProgress, at: expiresAt + 1e-9, expiry: Self.expiry))
        // Today's dates resolve about a tenth of a microsecond: the neighbouring representable instants.
        let now = Self.t0 + Self.expiry
        let nearNow = Date(timeIntervalSinceReferenceDate: now.timeIntervalSinceReferenceDate.nextDown)
        #expect(Upload.isExpired(lastProgress: Self.t0, at: now, expiry: Self.expiry))
        #expect(!Upload.isExpired(lastProgress: Self.t0, at: nearNow, expiry: Self.expiry))
        // Only an unfinished upload expires.
        var upload = Self.upload("u1", at: lastProgress)
        #expect(upload.isExpired(at: expiresAt, expiry: Self.expiry))
        upload.state = .verified
        #expect(!upload.isExpired(at: expiresAt, expiry: Self.expiry))
    }

    @Test func theExpirySweepUsesTheSameBoundary() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Self.upload("idle"))
        try await database.createUpload(Self.upload("later", at: Self.t0 + 0.001))
        try await database.createUpload(Self.upload("done", length: 10, offset: 10, state: .verified, sha256: "aa"))
        let lastProgress = try #require(try await database.upload(id: "idle")?.updatedAt)
        let expiresAt = Upload.expiresAt(lastProgress: lastProgress, expiry: Self.expiry)
        let justBefore = Date(timeIntervalSinceReferenceDate: expiresAt.timeIntervalSinceReferenceDate.nextDown)
        #expect(try await database.expireUploads(at: justBefore, expiry: Self.expiry) == [])
        #expect(try await database.expireUploads(at: expiresAt, expiry: Self.expiry) == ["idle"])
        #expect(try await database.upload(id: "idle")?.state == .expired)
        #expect(try await database.upload(id: "later")?.state == .uploading)
        #expect(try await database.expireUploads(at: expiresAt + 0.001, expiry: Self.expiry) == ["later"])
        #expect(try await database.upload(id: "done")?.state == .verified)
    }

    @Test func theExpirySweepAtTheExactInstantThroughTheService() async throws {
        // The same boundary through the service the server runs, with the test clock.
        let world = try await TestWorld(limits: .init(minFreeBytes: 0, uploadExpiry: Self.expiry))
        let upload = Self.upload("0123456789abcdef0123456789abcdef", case: world.caseNumber, at: world.clock.now)
        try await world.services.database.createUpload(upload)
        let stored = try #require(try await world.services.database.upload(id: upload.id))
        world.clock.set(Upload.expiresAt(lastProgress: stored.updatedAt, expiry: Self.expiry))
        let service = UploadExpiryService(services: world.services, interval: AppConfiguration().expirySweepInterval, logger: .init(label: "test"))
        #expect(try await service.sweep() == [upload.id])
    }

    // MARK: - The schema by name, and what SQLite's one writer gave for free

    @Test func bothStoresHaveTheSameMigrationsByName() async throws {
        let names = AppDatabase.migrator { _ in }.migrations
        #expect(names.count == 11 && names.first == "v1: users, cases, uploads"
                && names.last == "v11: the finished object's entity tag in the blob store")
        #expect(PostgresSchema.migrations.map(\.name) == names)
        // On PostgreSQL: the database records each name once, in order, and opening it again applies none twice.
        let (database, root) = try await Self.openStore()
        defer { try? FileManager.default.removeItem(at: root) }
        if let postgres = database as? PostgresMetadataStore {
            #expect(try await postgres.appliedMigrations() == names)
            let again = try await PostgresMetadataStore.connect(postgres.location)
            #expect(try await again.appliedMigrations() == names)
            await again.shutdown()
        }
    }

    @Test func aGivenCaseNumberIsTakenOnce() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        let draft = try CaseLifecycle.open(account: "ACME", subject: "s", number: "1", priority: nil, requestType: nil, at: Self.t0)
        let error = await #expect(throws: CaseNumberTaken.self) { try await database.createCase(draft, numberGiven: true) }
        #expect(error?.number == "00000001")
    }

    @Test func casesCreatedTogetherWithoutANumberTakeTheNextNumbersOnce() async throws {
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        let draft = try CaseLifecycle.open(account: "ACME", subject: "s", number: "1", priority: nil, requestType: nil, at: Self.t0)
        let numbers = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 { group.addTask { try await database.createCase(draft, numberGiven: false).number } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(numbers.sorted() == (2...9).map { CaseNumber.format(Int64($0)) })
    }

    /// 16 creations at once against a quota of 3 unfinished uploads per user: each reads the usage in its insert's
    /// transaction, after the one before it committed (SQLite's one writer; PostgreSQL's `uploadSetLock`), so
    /// exactly 3 are admitted and 3 rows exist.
    @Test func creationsAtTheSameInstantAreAdmittedOneAfterAnother() async throws {
        struct OverQuota: Error {}
        let (database, root) = try await Self.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for n in 0..<16 {
                group.addTask {
                    do {
                        try await database.createUpload(Self.upload("u\(n)")) { usage, _ in
                            if usage.unfinishedByUser >= 3 { throw OverQuota() }
                        }
                        return true
                    } catch is OverQuota {
                        return false
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 3)
        #expect(try await database.uploadUsage(caseNumber: "00000001", userID: 1).unfinishedByUser == 3)
    }

    @Test func aPostgresURLIsReadAsLibpqReadsIt() throws {
        let location = try #require(PostgresLocation("postgres://casefiles:p%40ss%2Fword@db.example.com:6432/files?sslmode=require"))
        #expect(location.host == "db.example.com" && location.port == 6432 && location.username == "casefiles")
        #expect(location.password == "p@ss/word" && location.database == "files" && location.sslMode == .require)
        #expect(location.redacted == "postgres://casefiles:***@db.example.com:6432/files?sslmode=require")
        let plain = try #require(PostgresLocation("postgresql://postgres@127.0.0.1/casefiles"))
        #expect(plain.port == 5432 && plain.password == nil && plain.sslMode == .prefer)
        #expect(plain.redacted == "postgres://postgres@127.0.0.1:5432/casefiles")
        for bad in ["mysql://u@h/db", "postgres://h/db", "postgres://u@h", "postgres://u@h/db?sslmode=verify",
                    "postgres://u@h:0/db", "/var/lib/casefiles"] {
            #expect(PostgresLocation(bad) == nil, "\(bad)")
        }
    }
}
