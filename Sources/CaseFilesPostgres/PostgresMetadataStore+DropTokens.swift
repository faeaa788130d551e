import CaseFilesCore
import CaseFilesDatabase
import Foundation
import PostgresNIO

// Drop credentials (issue #20): AppDatabase's queries of the same name.

extension PostgresMetadataStore {
    public func createDropToken(_ token: DropToken) async throws -> DropToken {
        var token = token
        let t = token
        token.id = try await rows("""
            INSERT INTO dropToken (caseNumber, tokenHash, createdBy, createdAt, expiresAt, revokedAt, lastUsedAt)
            VALUES (\(t.caseNumber), \(t.tokenHash), \(t.createdBy), \(PostgresTimestamp(t.createdAt)),
                    \(PostgresTimestamp(t.expiresAt)), \(PostgresTimestamp.optional(t.revokedAt)),
                    \(PostgresTimestamp.optional(t.lastUsedAt)))
            RETURNING id
            """) { cells in try cells.next(Int64.self) }.first
        return token
    }

    public func dropTokens(caseNumber: String) async throws -> [DropToken] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.dropToken) FROM dropToken WHERE caseNumber = \(caseNumber) ORDER BY id
            """) { try DropToken(&$0) }
    }

    /// A revoked credential keeps its first revocation time; the answer is the row as this transaction left it.
    public func revokeDropToken(id: Int64, caseNumber: String, at date: Date) async throws -> DropToken? {
        let logger = self.logger
        return try await write { connection in
            try await connection.query("""
                UPDATE dropToken SET revokedAt = \(PostgresTimestamp(date))
                WHERE id = \(id) AND caseNumber = \(caseNumber) AND revokedAt IS NULL
                """, logger: logger)
            return try await Self.rows("""
                SELECT \(unescaped: RecordColumns.dropToken) FROM dropToken WHERE id = \(id) AND caseNumber = \(caseNumber)
                """, on: connection, logger: logger) { try DropToken(&$0) }.first
        }
    }

    /// One round trip (the join); PostgreSQL has no in-place read as SQLite does.
    public func dropToken(tokenHash: String) async throws -> (DropToken, SupportCase)? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.qualified(RecordColumns.dropToken, "t")),
                   \(unescaped: RecordColumns.qualified(RecordColumns.supportCase, "c"))
            FROM dropToken t JOIN supportCase c ON c.number = t.caseNumber WHERE t.tokenHash = \(tokenHash)
            """) { cells in (try DropToken(&cells), try SupportCase(&cells)) }.first
    }

    /// The first use is also an event, in the same transaction (the outbox: issue #18). The row is locked first, so
    /// two first uses at once make one event: the second reads the first's `lastUsedAt` once it commits.
    public func markDropTokenUsed(id: Int64, at date: Date) async throws {
        let logger = self.logger
        try await write { connection in
            let firstUse = try await Self.rows("""
                SELECT caseNumber, lastUsedAt IS NULL FROM dropToken WHERE id = \(id) FOR UPDATE
                """, on: connection, logger: logger) { cells in
                (caseNumber: try cells.next(String.self), isFirst: try cells.next(Bool.self))
            }
                .first
            try await connection.query("UPDATE dropToken SET lastUsedAt = \(PostgresTimestamp(date)) WHERE id = \(id)",
                                       logger: logger)
            if let firstUse, firstUse.isFirst {
                try await Self.enqueue(.make(.dropCredentialFirstUsed, .init(caseNumber: firstUse.caseNumber, dropCredentialID: id),
                                             at: date), on: connection, logger: logger)
            }
        }
    }

    /// Newest by creation time; PostgreSQL has no rowid, so uploads created in the same millisecond are told apart
    /// by id (AppDatabase: by insertion order).
    public func newestUnfinishedUpload(caseNumber: String, filename: String, createdBy: Int64,
                                       dropToken: Int64?) async throws -> Upload? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.upload) FROM upload
            WHERE caseNumber = \(caseNumber) AND filename = \(filename) AND state = 'uploading' AND createdBy = \(createdBy)
                AND createdByDropToken IS NOT DISTINCT FROM \(dropToken)::BIGINT
            ORDER BY createdAt DESC, id COLLATE "C" DESC LIMIT 1
            """) { try Upload(&$0) }.first
    }
}
