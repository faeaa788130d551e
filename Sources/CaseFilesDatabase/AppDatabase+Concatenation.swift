import Foundation
import GRDB
import CaseFilesCore

// tus concatenation (CaseFilesCore/Concatenation.swift): the schema of partial and final uploads, and the
// transactions that create a final upload and record its verification.

extension AppDatabase {
    /// Migration "v7": `upload.concat` says what an upload is in a concatenation; `finalPart` lists a final
    /// upload's partials in order. The invariants are the schema's: a partial is in at most one final (UNIQUE),
    /// positions are 0, 1, ... (CHECK and the primary key), and both ends of a part are in the same case and of
    /// the right kind (composite foreign keys onto `upload(id, caseNumber, concat)`, so no row can name an
    /// ordinary upload, a final as a part, or another case's partial); a final has a length (the sum of its parts').
    static func migrateConcatenation(_ db: Database) throws {
        try db.alter(table: "upload") { t in
            t.add(column: "concat", .text).check(sql: "concat IS NULL OR concat IN ('partial', 'final')")
        }
        // SQLite cannot add a table CHECK to an existing table; the final's length is set at its creation
        // (`createFinalUpload`) and never changes, and `finalPart`'s foreign keys need this unique key.
        try db.create(index: "upload_concat_key", on: "upload", columns: ["id", "caseNumber", "concat"], unique: true)
        try db.create(table: "finalPart") { t in
            t.column("finalID", .text).notNull()
            t.column("position", .integer).notNull().check(sql: "position >= 0")
            t.column("partialID", .text).notNull().unique()
            t.column("caseNumber", .text).notNull()
            t.column("finalKind", .text).notNull().defaults(to: "final").check(sql: "finalKind = 'final'")
            t.column("partialKind", .text).notNull().defaults(to: "partial").check(sql: "partialKind = 'partial'")
            t.primaryKey(["finalID", "position"])
            t.foreignKey(["finalID", "caseNumber", "finalKind"], references: "upload",
                         columns: ["id", "caseNumber", "concat"], onDelete: .restrict)
            t.foreignKey(["partialID", "caseNumber", "partialKind"], references: "upload",
                         columns: ["id", "caseNumber", "concat"], onDelete: .restrict)
        }
        try db.create(index: "upload_on_concat_state", on: "upload", columns: ["concat", "state"])
    }

    /// The uploads the expiry sweep may expire (`Upload.isExpired` then decides): unfinished ones, and complete
    /// partial uploads no final upload uses yet (tus: partials expire like uploads); never a final upload, whose
    /// verification is the server's own work, nor a partial that is part of one.
    static let expirable = """
        ((state = 'uploading' AND concat IS NOT 'final')
         OR (state = 'verified' AND concat = 'partial' AND id NOT IN (SELECT partialID FROM finalPart)))
        """

    public func createFinalUpload(_ final: Upload, partialIDs: [String]) async throws {
        try await write { db in
            for id in partialIDs {
                // Checked again here, in the final's transaction: the expiry sweep and another final run in
                // other transactions of the same writer.
                guard let partial = try Upload.fetchOne(db, key: id) else { throw UploadChangedUnderWriter(id: id, detail: "gone") }
                guard partial.state == .verified, partial.concat == .partial else {
                    throw UploadChangedUnderWriter(id: id, detail: "no longer a complete partial upload (\(partial.state))")
                }
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM finalPart WHERE partialID = ?", arguments: [id]) == true {
                    throw CaseFilesError.partialAlreadyUsed(id)
                }
            }
            try final.insert(db)
            for (position, id) in partialIDs.enumerated() {
                try db.execute(sql: "INSERT INTO finalPart (finalID, position, partialID, caseNumber) VALUES (?, ?, ?, ?)",
                               arguments: [final.id, position, id, final.caseNumber])
            }
        }
    }

    public func finalParts(finalID: String) async throws -> [Upload] {
        try await writer.read { db in
            try Upload.fetchAll(db, sql: """
                SELECT upload.* FROM finalPart JOIN upload ON upload.id = finalPart.partialID
                WHERE finalPart.finalID = ? ORDER BY finalPart.position
                """, arguments: [finalID])
        }
    }

    public func finalUsing(partialID: String) async throws -> String? {
        try readInPlace { db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT finalID FROM finalPart WHERE partialID = ?"),
                                arguments: [partialID])
        }
    }

    public func unverifiedFinals() async throws -> [String] {
        try await writer.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM upload WHERE concat = 'final' AND state = 'uploading' ORDER BY createdAt")
        }
    }

    public func recordFinalVerification(
        id: String, from expectedOffset: Int64, to newOffset: Int64, digestState: Data, completion: UploadCompletion?,
        at date: Date
    ) async throws {
        try await write { db in
            let guardSQL = "WHERE id = ? AND offset = ? AND state = 'uploading' AND concat = 'final'"
            switch completion {
            case nil:
                try db.execute(sql: "UPDATE upload SET offset = ?, digestState = ?, updatedAt = ? \(guardSQL)",
                               arguments: [newOffset, digestState, date, id, expectedOffset])
            case .verified(let sha256), .failed(let sha256):
                let state: UploadState = if case .verified = completion { .verified } else { .failed }
                try db.execute(
                    sql: "UPDATE upload SET offset = ?, digestState = ?, updatedAt = ?, state = ?, sha256 = ?, completedAt = ? \(guardSQL)",
                    arguments: [newOffset, digestState, date, state, sha256, date, id, expectedOffset])
            }
            guard db.changesCount == 1 else {
                throw UploadChangedUnderWriter(id: id, detail: "final upload changed under its verification")
            }
            if case .failed = completion {
                // The bytes are not what the client declared: the partials go with the final (their blobs are
                // removed by the caller, or by the orphan sweep after a crash).
                try db.execute(sql: """
                    UPDATE upload SET state = 'failed', updatedAt = ?
                    WHERE id IN (SELECT partialID FROM finalPart WHERE finalID = ?) AND state = 'verified'
                    """, arguments: [date, id])
            }
        }
    }
}
