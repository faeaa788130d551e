import CaseFilesCore
import CaseFilesDatabase
import Foundation
import Logging
import PostgresNIO

// The backup lease and the event outbox (AppDatabase+Maintenance.swift): the same rows and rules.

/// `casefiles backup` and `restore` copy a SQLite database file; a PostgreSQL database is backed up with
/// PostgreSQL's own tools (README, "Metadata on PostgreSQL").
public struct PostgresBackupUnsupported: Error, CustomStringConvertible {
    public init() {}

    public var description: String {
        "the metadata is on PostgreSQL (--database): back it up with pg_dump or the server's base backups, and the "
            + "storage root's blobs and key files with a file copy; `casefiles backup` and `restore` copy SQLite databases only"
    }
}

// MARK: - Backup lease

extension PostgresMetadataStore {
    static func backupLease(at now: Date, on connection: PostgresConnection, logger: Logger) async throws -> BackupLease? {
        try await rows("""
            SELECT holder, expiresAt FROM backupLease WHERE name = 'backup' AND expiresAt > \(PostgresTimestamp(now))
            """, on: connection, logger: logger) { cells in
            BackupLease(holder: try cells.next(), expiresAt: try cells.date())
        }.first
    }

    /// One conditional upsert takes the lease when it is free, expired or already this holder's: two backups that
    /// start together cannot both take it (the second's `ON CONFLICT … WHERE` sees the first's row). When it is
    /// not taken, the holder's lease is read; if it was released in between, the upsert is tried again.
    public func acquireBackupLease(holder: String, until: Date, at now: Date) async throws -> BackupLease? {
        let logger = self.logger
        return try await write { connection in
            while true {
                let taken = try await Self.count("""
                    INSERT INTO backupLease (name, holder, expiresAt) VALUES ('backup', \(holder), \(PostgresTimestamp(until)))
                    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expiresAt = excluded.expiresAt
                    WHERE backupLease.holder = excluded.holder OR backupLease.expiresAt <= \(PostgresTimestamp(now))
                    RETURNING 1
                    """, on: connection, logger: logger)
                if taken == 1 { return nil }
                if let held = try await Self.backupLease(at: now, on: connection, logger: logger) { return held }
            }
        }
    }

    public func renewBackupLease(holder: String, until: Date) async throws -> Bool {
        try await rows("""
            UPDATE backupLease SET expiresAt = \(PostgresTimestamp(until)) WHERE name = 'backup' AND holder = \(holder)
            RETURNING 1
            """) { _ in () }.count == 1
    }

    public func releaseBackupLease(holder: String) async throws {
        _ = try await rows("DELETE FROM backupLease WHERE name = 'backup' AND holder = \(holder)") { _ in () }
    }

    public func backupLease(at now: Date) async throws -> BackupLease? {
        let logger = self.logger
        return try await Self.mappingErrors {
            try await client.withConnection { connection in try await Self.backupLease(at: now, on: connection, logger: logger) }
        }
    }

    /// - Throws: `PostgresBackupUnsupported`, always.
    @available(*, noasync, message: "copies the database, blocking")
    public func backupDatabase(to path: String) throws {
        throw PostgresBackupUnsupported()
    }
}

// MARK: - Event outbox

extension PostgresMetadataStore {
    /// Adds `event` to the outbox inside the caller's transaction: the event exists if and only if its state
    /// change does.
    static func enqueue(_ e: OutboundEvent, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO outboxEvent (\(unescaped: RecordColumns.outboxEvent))
            VALUES (\(e.id), \(e.type.rawValue), \(e.body), \(PostgresTimestamp(e.createdAt)), \(e.state.rawValue),
                    \(e.attempts), \(PostgresTimestamp(e.nextAttemptAt)), \(e.lastError), \(e.deliveredTo),
                    \(PostgresTimestamp.optional(e.finishedAt)))
            """, logger: logger)
    }

    /// An upload's completion (verified or failed, as `recordAppend` just wrote it) as an event.
    static func enqueueCompletionEvent(uploadID: String, at now: Date, on connection: PostgresConnection,
                                       logger: Logger) async throws {
        guard let upload = try await rows("""
            SELECT \(unescaped: RecordColumns.upload) FROM upload WHERE id = \(uploadID)
            """, on: connection, logger: logger, { try Upload(&$0) }).first
        else { return }
        switch upload.state {
        case .verified:
            try await enqueue(.make(.attachmentVerified, .init(
                caseNumber: upload.caseNumber, uploadID: upload.id, filename: upload.filename, length: upload.length,
                sha256: upload.sha256), at: now), on: connection, logger: logger)
        case .failed:
            try await enqueue(.make(.uploadFailed, .init(
                caseNumber: upload.caseNumber, uploadID: upload.id, filename: upload.filename, length: upload.length,
                sha256: upload.sha256, declaredSHA256: upload.declaredSHA256, reason: "sha256_mismatch"), at: now),
                on: connection, logger: logger)
        default:
            return
        }
    }

    public func dueEvents(at now: Date, limit: Int) async throws -> [OutboundEvent] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.outboxEvent) FROM outboxEvent
            WHERE state = 'pending' AND nextAttemptAt <= \(Self.sqlUpperBound(now))
            ORDER BY createdAt, id COLLATE "C" LIMIT \(limit)
            """) { try OutboundEvent(&$0) }
    }

    public func recordAttempt(_ e: OutboundEvent) async throws {
        _ = try await rows("""
            UPDATE outboxEvent SET type = \(e.type.rawValue), body = \(e.body), createdAt = \(PostgresTimestamp(e.createdAt)),
                state = \(e.state.rawValue), attempts = \(e.attempts), nextAttemptAt = \(PostgresTimestamp(e.nextAttemptAt)),
                lastError = \(e.lastError), deliveredTo = \(e.deliveredTo), finishedAt = \(PostgresTimestamp.optional(e.finishedAt))
            WHERE id = \(e.id)
            """) { _ in () }
    }

    public func events(state: OutboundEvent.State?, limit: Int) async throws -> [OutboundEvent] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.outboxEvent) FROM outboxEvent
            WHERE \(state?.rawValue)::TEXT IS NULL OR state = \(state?.rawValue)
            ORDER BY createdAt DESC, id COLLATE "C" DESC LIMIT \(limit)
            """) { try OutboundEvent(&$0) }
    }

    public func eventCounts() async throws -> [OutboundEvent.State: Int] {
        var counts = Dictionary(uniqueKeysWithValues: OutboundEvent.State.allCases.map { ($0, 0) })
        let rows = try await rows("SELECT state, COUNT(*) FROM outboxEvent GROUP BY state") { cells in
            (try cells.next(String.self), try cells.next(Int64.self))
        }
        for (state, count) in rows {
            if let state = OutboundEvent.State(rawValue: state) { counts[state] = Int(count) }
        }
        return counts
    }

    public func pruneEvents(finishedBefore date: Date) async throws -> Int {
        try await rows("""
            DELETE FROM outboxEvent WHERE state IN ('delivered', 'dead') AND finishedAt < \(PostgresTimestamp(date))
            RETURNING 1
            """) { _ in () }.count
    }
}
