import CaseFilesCore
import CaseFilesDatabase
import Foundation
import PostgresNIO

// The bundle index (AppDatabase+Bundles.swift, issue #21): one transaction writes a whole index; the purge removes
// it in its own transaction (`purgeUpload`).

extension PostgresMetadataStore {
    public func nextAttachmentToIndex() async throws -> Upload? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.upload) FROM upload WHERE state = 'verified'
            AND id NOT IN (SELECT attachmentID FROM bundleIndex WHERE state <> 'pending')
            ORDER BY completedAt, id COLLATE "C" LIMIT 1
            """) { try Upload(&$0) }.first
    }

    /// The attachment's row is read `FOR SHARE`: a purge (which deletes the index in its transaction) waits for
    /// this one to commit, and one that committed first is seen (false, nothing written). The entries and the
    /// checkpoints go in multi-row INSERTs of `rowsPerInsert` rows (an index has up to 100,000 entries).
    public func saveBundleIndex(_ index: BundleIndex, entries: [BundleEntry], checkpoints: [BundleCheckpoint]) async throws -> Bool {
        let logger = self.logger
        return try await write { connection in
            let verified = try await Self.rows("""
                SELECT state = 'verified' FROM upload WHERE id = \(index.attachmentID) FOR SHARE
                """, on: connection, logger: logger) { cells in try cells.next(Bool.self) }.first
            guard verified == true else { return false }
            try await connection.query("DELETE FROM bundleIndex WHERE attachmentID = \(index.attachmentID)", logger: logger)
            try await connection.query("""
                INSERT INTO bundleIndex (\(unescaped: RecordColumns.bundleIndex))
                VALUES (\(index.attachmentID), \(index.state.rawValue), \(index.format?.rawValue), \(index.reason),
                        \(index.entryCount), \(index.truncated), \(index.stoppedAt), \(index.checkpointSpacing),
                        \(index.indexBytes), \(PostgresTimestamp(index.updatedAt)))
                """, logger: logger)
            try await Self.insert(entries, into: "bundleEntry", columns: RecordColumns.bundleEntry, on: connection,
                                  logger: logger) { entry, bindings in
                bindings.append(entry.attachmentID)
                bindings.append(entry.number)
                bindings.append(entry.path)
                bindings.append(entry.size)
                bindings.append(PostgresTimestamp.optional(entry.modifiedAt))
                bindings.append(entry.type.rawValue)
                bindings.append(entry.linkTarget)
                bindings.append(entry.dataOffset)
                bindings.append(entry.compressedSize)
                bindings.append(entry.method)
                bindings.append(entry.problem)
                bindings.append(entry.sha256)
                bindings.append(entry.flags.joined(separator: ","))
            }
            try await Self.insert(checkpoints, into: "bundleCheckpoint", columns: RecordColumns.bundleCheckpoint, on: connection,
                                  logger: logger) { point, bindings in
                bindings.append(point.attachmentID)
                bindings.append(point.number)
                bindings.append(point.outputOffset)
                bindings.append(point.inputOffset)
                bindings.append(point.bits)
                try bindings.append(point.window)
            }
            return true
        }
    }

    /// Rows per multi-row INSERT: 500 × 13 parameters stays well under the protocol's 65,535 per statement.
    static let rowsPerInsert = 500

    /// Inserts `rows` into `table` in multi-row INSERTs of `rowsPerInsert` rows; `bind` appends one row's values,
    /// one per column of `columns` (comma-separated), in its order. `table` and `columns` are this file's
    /// constants, never input.
    static func insert<Row>(_ rows: [Row], into table: String, columns: String, on connection: PostgresConnection,
                            logger: Logger, bind: (Row, inout PostgresBindings) throws -> Void) async throws {
        let width = columns.split(separator: ",").count
        for start in stride(from: 0, to: rows.count, by: rowsPerInsert) {
            var bindings = PostgresBindings(capacity: width * rowsPerInsert)
            var values: [String] = []
            for row in rows[start..<min(start + rowsPerInsert, rows.count)] {
                values.append(placeholders(from: bindings.count + 1, count: width))
                try bind(row, &bindings)
            }
            precondition(bindings.count == width * values.count, "\(table): a row bound other than \(width) values")
            try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(table) (\(columns)) VALUES \(values.joined(separator: ", "))",
                                                     binds: bindings), logger: logger)
        }
    }

    /// "($first, $first+1, …)" for one row of `count` parameters.
    static func placeholders(from first: Int, count: Int) -> String {
        "(" + (first..<first + count).map { "$\($0)" }.joined(separator: ", ") + ")"
    }

    public func bundleIndex(attachmentID: String) async throws -> BundleIndex? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.bundleIndex) FROM bundleIndex WHERE attachmentID = \(attachmentID)
            """) { try BundleIndex(&$0) }.first
    }

    /// `starts_with` compares characters; for the valid UTF-8 that TEXT holds, a character prefix is a byte prefix,
    /// which is what AppDatabase compares.
    public func bundleEntries(attachmentID: String, prefix: String?, after: Int?, limit: Int) async throws -> [BundleEntry] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.bundleEntry) FROM bundleEntry
            WHERE attachmentID = \(attachmentID) AND number > \(after ?? 0) AND starts_with(path, \(prefix ?? ""))
            ORDER BY number LIMIT \(limit)
            """) { try BundleEntry(&$0) }
    }

    public func bundleEntries(attachmentID: String, path: String) async throws -> [BundleEntry] {
        try await rows("""
            SELECT \(unescaped: RecordColumns.bundleEntry) FROM bundleEntry
            WHERE attachmentID = \(attachmentID) AND path = \(path) ORDER BY number
            """) { try BundleEntry(&$0) }
    }

    public func bundleCheckpoint(attachmentID: String, atOrBefore outputOffset: Int64) async throws -> BundleCheckpoint? {
        try await rows("""
            SELECT \(unescaped: RecordColumns.bundleCheckpoint) FROM bundleCheckpoint
            WHERE attachmentID = \(attachmentID) AND outputOffset <= \(outputOffset)
            ORDER BY outputOffset DESC LIMIT 1
            """) { try BundleCheckpoint(&$0) }.first
    }
}
