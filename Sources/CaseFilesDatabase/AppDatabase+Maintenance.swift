import Foundation
import GRDB
import CaseFilesCore

/// The backup lease: while a backup copies the blobs its copy of the database names, nothing removes blobs.
/// The removers check it in the transaction that decides a removal (`purgeUpload`, `expireUploads`) or just
/// before it (the orphan sweep), so a lease taken before the backup's snapshot covers every removal the
/// snapshot does not already show. It expires, so a crashed backup holds nothing for long.
public protocol BackupLeaseStore: Sendable {
    /// Takes the lease until `until` if nobody holds an unexpired one at `now`; returns the holder's lease otherwise.
    func acquireBackupLease(holder: String, until: Date, at now: Date) async throws -> BackupLease?
    /// Extends the lease if `holder` still holds it; returns false if it was lost (it expired and was taken).
    func renewBackupLease(holder: String, until: Date) async throws -> Bool
    func releaseBackupLease(holder: String) async throws
    /// The unexpired lease at `now`, if any.
    func backupLease(at now: Date) async throws -> BackupLease?
    /// SQLite's online backup of the whole database into a new file at `path` (created 0600 by the caller): a
    /// consistent snapshot while others write (sqlite.org/backup.html). Blocks: call it on a blocking thread.
    @available(*, noasync, message: "copies the database, blocking")
    func backupDatabase(to path: String) throws
}

/// The durable outbox of events for the case system (`OutboundEvent`); events are added by the transactions
/// that make the state changes they report (`recordAppend`, `expireUploads`, `markCasePurged`).
public protocol EventOutbox: Sendable {
    /// Pending events due at `now`, oldest first.
    func dueEvents(at now: Date, limit: Int) async throws -> [OutboundEvent]
    /// Saves an attempt's outcome: the event's new state, attempts, next attempt, last error and deliveries.
    func recordAttempt(_ event: OutboundEvent) async throws
    /// Events, newest first, optionally in one state.
    func events(state: OutboundEvent.State?, limit: Int) async throws -> [OutboundEvent]
    /// Deletes delivered and dead events finished before `date`; returns how many.
    func pruneEvents(finishedBefore date: Date) async throws -> Int
    /// How many events are in each state (every state present, 0 when none): the metrics' view of the outbox.
    func eventCounts() async throws -> [OutboundEvent.State: Int]
}

public struct BackupLease: Sendable, Equatable {
    public var holder: String
    public var expiresAt: Date

    public init(holder: String, expiresAt: Date) {
        self.holder = holder
        self.expiresAt = expiresAt
    }
}

/// A removal of blobs was refused because a backup holds the lease (until `until`).
public struct BackupInProgress: Error, CustomStringConvertible {
    public let until: Date

    public init(until: Date) {
        self.until = until
    }

    public var description: String {
        "a backup holds the blob-removal lease until \(until.formatted(.iso8601)); removal waits for it"
    }
}


// MARK: - Backup lease

extension AppDatabase {
    static func backupLease(_ db: Database, at now: Date) throws -> BackupLease? {
        guard let row = try Row.fetchOne(db, sql: "SELECT holder, expiresAt FROM backupLease WHERE name = 'backup'"),
              let expiresAt: Date = row["expiresAt"], expiresAt > now
        else { return nil }
        return BackupLease(holder: row["holder"], expiresAt: expiresAt)
    }

    public func acquireBackupLease(holder: String, until: Date, at now: Date) async throws -> BackupLease? {
        try await write { db in
            if let held = try Self.backupLease(db, at: now), held.holder != holder { return held }
            try db.execute(sql: """
                INSERT INTO backupLease (name, holder, expiresAt) VALUES ('backup', ?, ?)
                ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expiresAt = excluded.expiresAt
                """, arguments: [holder, until])
            return nil
        }
    }

    public func renewBackupLease(holder: String, until: Date) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE backupLease SET expiresAt = ? WHERE name = 'backup' AND holder = ?",
                           arguments: [until, holder])
            return db.changesCount == 1
        }
    }

    public func releaseBackupLease(holder: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM backupLease WHERE name = 'backup' AND holder = ?", arguments: [holder])
        }
    }

    public func backupLease(at now: Date) async throws -> BackupLease? {
        try await writer.read { db in try Self.backupLease(db, at: now) }
    }

    @available(*, noasync, message: "copies the database, blocking")
    public func backupDatabase(to path: String) throws {
        try DatabaseCopy.backup(from: writer, to: path)
    }
}

// MARK: - Event outbox

extension OutboundEvent.Kind: DatabaseValueConvertible {}
extension OutboundEvent.State: DatabaseValueConvertible {}

extension OutboundEvent: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "outboxEvent"
}

extension AppDatabase {
    /// Adds `event` to the outbox inside the caller's transaction: the event exists if and only if its state
    /// change does.
    static func enqueue(_ db: Database, _ event: OutboundEvent) throws {
        try event.insert(db)
    }

    /// An upload's completion (verified or failed, as `recordAppend` just wrote it) as an event.
    static func enqueueCompletionEvent(_ db: Database, uploadID: String, at now: Date) throws {
        guard let upload = try Upload.fetchOne(db, key: uploadID) else { return }
        switch upload.state {
        case .verified:
            try enqueue(db, .make(.attachmentVerified, .init(
                caseNumber: upload.caseNumber, uploadID: upload.id, filename: upload.filename, length: upload.length,
                sha256: upload.sha256), at: now))
        case .failed:
            try enqueue(db, .make(.uploadFailed, .init(
                caseNumber: upload.caseNumber, uploadID: upload.id, filename: upload.filename, length: upload.length,
                sha256: upload.sha256, declaredSHA256: upload.declaredSHA256, reason: "sha256_mismatch"), at: now))
        default:
            return
        }
    }

    public func dueEvents(at now: Date, limit: Int) async throws -> [OutboundEvent] {
        try await writer.read { db in
            try OutboundEvent.fetchAll(db, sql: """
                SELECT * FROM outboxEvent WHERE state = 'pending' AND nextAttemptAt <= ?
                ORDER BY createdAt, id LIMIT ?
                """, arguments: [Self.sqlUpperBound(now), limit])
        }
    }

    public func recordAttempt(_ event: OutboundEvent) async throws {
        try await write { db in try event.update(db) }
    }

    public func events(state: OutboundEvent.State?, limit: Int) async throws -> [OutboundEvent] {
        try await writer.read { db in
            var request = OutboundEvent.all()
            if let state { request = request.filter(Column("state") == state) }
            return try request.order(Column("createdAt").desc, Column("id").desc).limit(limit).fetchAll(db)
        }
    }

    public func eventCounts() async throws -> [OutboundEvent.State: Int] {
        try await writer.read { db in
            var counts = Dictionary(uniqueKeysWithValues: OutboundEvent.State.allCases.map { ($0, 0) })
            for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM outboxEvent GROUP BY state") {
                if let state = OutboundEvent.State(rawValue: row["state"]) { counts[state] = row["n"] }
            }
            return counts
        }
    }

    public func pruneEvents(finishedBefore date: Date) async throws -> Int {
        try await write { db in
            try db.execute(sql: "DELETE FROM outboxEvent WHERE state IN ('delivered', 'dead') AND finishedAt < ?",
                           arguments: [date])
            return db.changesCount
        }
    }
}

// MARK: - A copy of the database (backup and restore)

/// A database file made by SQLite's online backup (`casefiles backup`, `casefiles restore`), opened on its own,
/// outside any running service, to read and fix up what the copy needs.
public struct DatabaseCopy: Sendable {
    private let queue: DatabaseQueue

    public init(path: String) throws {
        queue = try DatabaseQueue(path: path)
    }

    /// Copies `source` into a new database file at `path` with the online backup API, page by page, so writers
    /// go on meanwhile; the copy is the database as of one moment.
    static func backup(from source: any DatabaseReader, to path: String) throws {
        let destination = try DatabaseQueue(path: path)
        try source.backup(to: destination)
        // The copy is a plain rollback-journal file: one file, nothing else to carry.
        try destination.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA journal_mode = DELETE") }
        try destination.close()
    }

    /// Copies the database file at `source` (a backup; opened read-only, left unchanged) into `path`.
    public static func restore(from source: String, to path: String) throws {
        var configuration = Configuration()
        configuration.readonly = true
        let reader = try DatabaseQueue(path: source, configuration: configuration)
        try backup(from: reader, to: path)
        try reader.close()
    }

    /// The uploads whose blobs the copy names (`UploadState.blobOwners`): verified attachments and unfinished uploads.
    public func blobOwners() throws -> [Upload] {
        try queue.read { db in
            try Upload.filter(UploadState.blobOwners.contains(Upload.Columns.state)).order(Upload.Columns.id).fetchAll(db)
        }
    }

    /// Unfinished uploads whose blobs were gone by the time they were copied (terminated by their client while the
    /// backup ran) become `terminated` in the copy, as they would be after the termination.
    public func markTerminated(ids: [String], at now: Date) throws {
        try queue.write { db in
            for id in ids {
                try db.execute(sql: "UPDATE upload SET state = 'terminated', updatedAt = ? WHERE id = ? AND state = 'uploading'",
                               arguments: [now, id])
            }
        }
    }

    /// The copy was made under the backup's own lease: it must not come back holding it.
    public func removeBackupLease() throws {
        try queue.write { db in try db.execute(sql: "DELETE FROM backupLease") }
    }

    /// `PRAGMA integrity_check`'s answer: "ok", or its list of problems.
    public func integrityCheck() throws -> String {
        try queue.read { db in
            try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "\n")
        }
    }

    public func close() throws {
        try queue.close()
    }
}
