import CaseFilesCore
import Foundation
import GRDB

// The bundle index's schema and queries (issue #21). Checkpoints are rows with their window as a BLOB, in
// the same database as the entries: one transaction writes a whole index, and the purge removes it with the
// attachment in the purge's own transaction (no side files to lose track of).

extension AppDatabase {
    /// Registered after every earlier migration (`migrator`).
    static func registerBundleMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v10: archive index (entries, checkpoints), download entry path") { db in
            try db.create(table: "bundleIndex") { t in
                t.primaryKey("attachmentID", .text).references("upload", onDelete: .cascade)
                t.column("state", .text).notNull()
                    .check(sql: "state IN ('pending', 'ready', 'not_an_archive', 'unreadable')")
                t.column("format", .text)
                t.column("reason", .text)
                t.column("entryCount", .integer).notNull().defaults(to: 0)
                t.column("truncated", .boolean).notNull().defaults(to: false)
                t.column("stoppedAt", .integer)
                t.column("checkpointSpacing", .integer)
                t.column("indexBytes", .integer).notNull().defaults(to: 0).check(sql: "indexBytes >= 0")
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "bundleEntry") { t in
                t.column("attachmentID", .text).notNull().references("bundleIndex", onDelete: .cascade)
                t.column("number", .integer).notNull()
                t.column("path", .text).notNull()
                t.column("size", .integer).notNull()
                t.column("modifiedAt", .datetime)
                t.column("type", .text).notNull()
                t.column("linkTarget", .text)
                t.column("dataOffset", .integer).notNull()
                t.column("compressedSize", .integer)
                t.column("method", .integer)
                t.column("problem", .text)
                t.column("sha256", .text)
                t.column("flags", .text).notNull().defaults(to: "")
                t.primaryKey(["attachmentID", "number"])
            }
            try db.create(index: "bundleEntry_on_path", on: "bundleEntry", columns: ["attachmentID", "path"])
            try db.create(table: "bundleCheckpoint") { t in
                t.column("attachmentID", .text).notNull().references("bundleIndex", onDelete: .cascade)
                t.column("number", .integer).notNull()
                t.column("outputOffset", .integer).notNull()
                t.column("inputOffset", .integer).notNull()
                t.column("bits", .integer).notNull().check(sql: "bits BETWEEN 0 AND 7")
                t.column("window", .blob).notNull()
                t.primaryKey(["attachmentID", "number"])
            }
            try db.create(index: "bundleCheckpoint_on_output", on: "bundleCheckpoint",
                          columns: ["attachmentID", "outputOffset"])
            // A download of one entry names it; null for whole attachments.
            try db.alter(table: "download") { t in t.add(column: "entryPath", .text) }
        }
    }
}

extension AppDatabase {
    public func nextAttachmentToIndex() async throws -> Upload? {
        try await writer.read { db in
            try Upload.fetchOne(db, sql: """
                SELECT * FROM upload WHERE state = 'verified'
                AND id NOT IN (SELECT attachmentID FROM bundleIndex WHERE state <> 'pending')
                ORDER BY completedAt, id LIMIT 1
                """)
        }
    }

    public func saveBundleIndex(_ index: BundleIndex, entries: [BundleEntry], checkpoints: [BundleCheckpoint]) async throws -> Bool {
        try await write { db in
            guard try Bool.fetchOne(db, sql: "SELECT state = 'verified' FROM upload WHERE id = ?",
                                    arguments: [index.attachmentID]) == true else { return false }
            try db.execute(sql: "DELETE FROM bundleIndex WHERE attachmentID = ?", arguments: [index.attachmentID])
            try db.execute(sql: """
                INSERT INTO bundleIndex (attachmentID, state, format, reason, entryCount, truncated, stoppedAt,
                                         checkpointSpacing, indexBytes, updatedAt)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [index.attachmentID, index.state.rawValue, index.format?.rawValue, index.reason,
                                 index.entryCount, index.truncated, index.stoppedAt, index.checkpointSpacing,
                                 index.indexBytes, index.updatedAt])
            let insertEntry = try db.cachedStatement(sql: """
                INSERT INTO bundleEntry (attachmentID, number, path, size, modifiedAt, type, linkTarget, dataOffset,
                                         compressedSize, method, problem, sha256, flags)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            for entry in entries {
                try insertEntry.execute(arguments: [
                    entry.attachmentID, entry.number, entry.path, entry.size, entry.modifiedAt, entry.type.rawValue,
                    entry.linkTarget, entry.dataOffset, entry.compressedSize, entry.method, entry.problem, entry.sha256,
                    entry.flags.joined(separator: ",")])
            }
            let insertCheckpoint = try db.cachedStatement(sql: """
                INSERT INTO bundleCheckpoint (attachmentID, number, outputOffset, inputOffset, bits, window)
                VALUES (?, ?, ?, ?, ?, ?)
                """)
            for point in checkpoints {
                try insertCheckpoint.execute(arguments: [point.attachmentID, point.number, point.outputOffset,
                                                         point.inputOffset, point.bits, point.window])
            }
            return true
        }
    }

    public func bundleIndex(attachmentID: String) async throws -> BundleIndex? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM bundleIndex WHERE attachmentID = ?", arguments: [attachmentID])
                .map { row in
                    BundleIndex(attachmentID: row["attachmentID"],
                                state: BundleIndexState(rawValue: row["state"]) ?? .pending,
                                format: (row["format"] as String?).flatMap(BundleFormat.init(rawValue:)),
                                reason: row["reason"], entryCount: row["entryCount"], truncated: row["truncated"],
                                stoppedAt: row["stoppedAt"], checkpointSpacing: row["checkpointSpacing"],
                                indexBytes: row["indexBytes"], updatedAt: row["updatedAt"])
                }
        }
    }

    public func bundleEntries(attachmentID: String, prefix: String?, after: Int?, limit: Int) async throws -> [BundleEntry] {
        try await writer.read { db in
            var sql = "SELECT * FROM bundleEntry WHERE attachmentID = ? AND number > ?"
            var arguments: StatementArguments = [attachmentID, after ?? 0]
            if let prefix, !prefix.isEmpty {
                // substr counts characters, as Swift's `count` does not for every string: compare bytes instead.
                sql += " AND substr(CAST(path AS BLOB), 1, ?) = CAST(? AS BLOB)"
                arguments += [prefix.utf8.count, prefix]
            }
            sql += " ORDER BY number LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.bundleEntry)
        }
    }

    public func bundleEntries(attachmentID: String, path: String) async throws -> [BundleEntry] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM bundleEntry WHERE attachmentID = ? AND path = ? ORDER BY number",
                             arguments: [attachmentID, path]).map(Self.bundleEntry)
        }
    }

    public func bundleCheckpoint(attachmentID: String, atOrBefore outputOffset: Int64) async throws -> BundleCheckpoint? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: """
                SELECT * FROM bundleCheckpoint WHERE attachmentID = ? AND outputOffset <= ?
                ORDER BY outputOffset DESC LIMIT 1
                """, arguments: [attachmentID, outputOffset]).map { row in
                BundleCheckpoint(attachmentID: row["attachmentID"], number: row["number"], outputOffset: row["outputOffset"],
                                 inputOffset: row["inputOffset"], bits: row["bits"], window: row["window"])
            }
        }
    }

    /// The index rows of an attachment, in the purge's transaction (`purgeUpload`).
    static func deleteBundleIndex(_ db: Database, attachmentID: String) throws {
        try db.execute(sql: "DELETE FROM bundleIndex WHERE attachmentID = ?", arguments: [attachmentID])
    }

    private static func bundleEntry(_ row: Row) -> BundleEntry {
        let flags: String = row["flags"]
        return BundleEntry(
            attachmentID: row["attachmentID"], number: row["number"], path: row["path"], size: row["size"],
            modifiedAt: row["modifiedAt"], type: BundleEntryType(rawValue: row["type"]) ?? .other,
            linkTarget: row["linkTarget"], dataOffset: row["dataOffset"], compressedSize: row["compressedSize"],
            method: row["method"], problem: row["problem"], sha256: row["sha256"],
            flags: flags.isEmpty ? [] : flags.split(separator: ",").map(String.init))
    }
}
