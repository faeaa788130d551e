import CaseFilesCore
import CaseFilesDatabase
import Foundation
import PostgresNIO

// tus concatenation (AppDatabase+Concatenation.swift): creating a final upload and recording its verification.

extension PostgresMetadataStore {
    /// Under `uploadSetLock`, as the expiry sweep: each partial is checked again in the final's transaction, then
    /// the final and its parts are inserted (the schema's UNIQUE on `finalPart.partialID` and its foreign keys hold
    /// the invariants whatever happens).
    public func createFinalUpload(_ final: Upload, partialIDs: [String]) async throws {
        let logger = self.logger
        try await write { connection in
            try await Self.lockUploadSet(on: connection, logger: logger)
            for id in partialIDs {
                guard let partial = try await Self.rows("""
                    SELECT \(unescaped: RecordColumns.upload) FROM upload WHERE id = \(id)
                    """, on: connection, logger: logger, { try Upload(&$0) }).first
                else { throw UploadChangedUnderWriter(id: id, detail: "gone") }
                guard partial.state == .verified, partial.concat == .partial else {
                    throw UploadChangedUnderWriter(id: id, detail: "no longer a complete partial upload (\(partial.state))")
                }
                if try await !Self.rows("SELECT 1 FROM finalPart WHERE partialID = \(id)", on: connection, logger: logger,
                                        { _ in () }).isEmpty {
                    throw CaseFilesError.partialAlreadyUsed(id)
                }
            }
            try await Self.insertUpload(final, on: connection, logger: logger)
            for (position, id) in partialIDs.enumerated() {
                try await connection.query("""
                    INSERT INTO finalPart (finalID, position, partialID, caseNumber)
                    VALUES (\(final.id), \(position), \(id), \(final.caseNumber))
                    """, logger: logger)
            }
        }
    }

    public func finalParts(finalID: String) async throws -> [Upload] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.qualified(RecordColumns.upload, "u"))
            FROM finalPart p JOIN upload u ON u.id = p.partialID WHERE p.finalID = \(finalID) ORDER BY p.position
            """) { try Upload(&$0) }
    }

    public func finalUsing(partialID: String) async throws -> String? {
        try await rows("SELECT finalID FROM finalPart WHERE partialID = \(partialID)") { cells in try cells.next(String.self) }
            .first
    }

    public func unverifiedFinals() async throws -> [String] {
        try await rows("""
            SELECT id FROM upload WHERE concat = 'final' AND state = 'uploading' ORDER BY createdAt, id COLLATE "C"
            """) { cells in try cells.next(String.self) }
    }

    /// The `offset = expected` guard, as `recordAppend`'s; a failed verification fails the partials in the same
    /// transaction (their blobs are removed by the caller, or by the orphan sweep after a crash).
    public func recordFinalVerification(
        id: String, from expectedOffset: Int64, to newOffset: Int64, digestState: Data, completion: UploadCompletion?,
        at date: Date
    ) async throws {
        let logger = self.logger
        try await write { connection in
            let at = PostgresTimestamp(date)
            let changed = try await Self.advanceOffset(id: id, from: expectedOffset, to: newOffset, digestState: digestState,
                                                       completion: completion, at: at, finalOnly: true,
                                                       on: connection, logger: logger)
            guard changed == 1 else {
                throw UploadChangedUnderWriter(id: id, detail: "final upload changed under its verification")
            }
            if case .failed = completion {
                try await connection.query("""
                    UPDATE upload SET state = 'failed', updatedAt = \(at)
                    WHERE id IN (SELECT partialID FROM finalPart WHERE finalID = \(id)) AND state = 'verified'
                    """, logger: logger)
            }
        }
    }
}
