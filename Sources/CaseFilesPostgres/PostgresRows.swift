import CaseFilesCore
import Foundation
import PostgresNIO

// How the core's records come out of PostgreSQL rows: each record's column list (the SELECT's order) and its
// decoder, reading the row's cells in that order. Enums are stored as their raw values.

/// Reads a row's cells left to right.
struct Cells {
    private let row: PostgresRandomAccessRow
    private var index = 0

    init(_ row: PostgresRow) { self.row = row.makeRandomAccess() }

    mutating func next<T: PostgresDecodable>(_: T.Type = T.self) throws -> T {
        defer { index += 1 }
        return try row[index].decode(T.self)
    }

    mutating func date() throws -> Date { try next(PostgresTimestamp.self).date }
    mutating func optionalDate() throws -> Date? { try next(PostgresTimestamp?.self)?.date }

    mutating func optionalValue<T: RawRepresentable>(_: T.Type) throws -> T? where T.RawValue == String {
        guard let text = try next(String?.self) else { return nil }
        guard let value = T(rawValue: text) else { throw UnknownStoredValue(value: text, type: "\(T.self)") }
        return value
    }

    /// A raw value the schema's CHECK allows; anything else is a damaged row.
    mutating func value<T: RawRepresentable>(_: T.Type) throws -> T where T.RawValue == String {
        let text = try next(String.self)
        guard let value = T(rawValue: text) else { throw UnknownStoredValue(value: text, type: "\(T.self)") }
        return value
    }
}

/// A stored text that no case of its enum has (the schema's CHECKs should make this impossible).
struct UnknownStoredValue: Error, CustomStringConvertible {
    let value: String
    let type: String
    var description: String { "stored value \(value) is not a \(type)" }
}

extension PostgresTimestamp {
    static func optional(_ date: Date?) -> PostgresTimestamp? { date.map(PostgresTimestamp.init) }
}

enum RecordColumns {
    static let user = #"id, name, role, account, tokenHash, createdAt, revokedAt"#
    static let supportCase = """
        number, account, subject, requestType, priority, status, subStatus, openedAt, closedAt, updatedAt, legalHold,
        purgedAt
        """
    static let upload = """
        id, caseNumber, filename, filetype, rawMetadata, length, "offset", state, declaredSHA256, digestState, sha256,
        createdBy, createdAt, updatedAt, completedAt, purgedAt, concat, createdByDropToken
        """
    static let caseEvent = "id, caseNumber, kind, status, subStatus, actor, comment, at"
    static let purgeRun = """
        id, startedAt, finishedAt, asOf, retentionDays, trigger, state, casesPurged, itemsPurged, bytesFreed,
        casesSkippedForHold, itemsSkippedForHold, errors
        """
    static let purgeItem = "id, runID, caseNumber, uploadID, filename, previousState, bytes, at"
    static let downloadLink = "nonce, uploadID, userID, expiresAt, issuedAt, bytesServed"
    static let dropToken = "id, caseNumber, tokenHash, createdBy, createdAt, expiresAt, revokedAt, lastUsedAt"
    static let outboxEvent = """
        id, type, body, createdAt, state, attempts, nextAttemptAt, lastError, deliveredTo, finishedAt
        """
    static let bundleIndex = """
        attachmentID, state, format, reason, entryCount, truncated, stoppedAt, checkpointSpacing, indexBytes, updatedAt
        """
    static let bundleEntry = """
        attachmentID, number, path, size, modifiedAt, type, linkTarget, dataOffset, compressedSize, method, problem,
        sha256, flags
        """
    static let bundleCheckpoint = #"attachmentID, number, outputOffset, inputOffset, bits, "window""#

    /// The same lists with a table alias in front of each column (for joins).
    static func qualified(_ columns: String, _ alias: String) -> String {
        columns.split(separator: ",").map { "\(alias).\($0.trimmingCharacters(in: .whitespacesAndNewlines))" }
            .joined(separator: ", ")
    }
}

extension User {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(Int64.self), name: try cells.next(), role: try cells.value(Role.self),
                  account: try cells.next(), tokenHash: try cells.next(), createdAt: try cells.date(),
                  revokedAt: try cells.optionalDate())
    }
}

extension SupportCase {
    init(_ cells: inout Cells) throws {
        self.init(number: try cells.next(), account: try cells.next(), subject: try cells.next(),
                  requestType: try cells.value(RequestType.self), priority: try cells.value(CasePriority.self),
                  status: try cells.value(CaseStatus.self), subStatus: try cells.next(), openedAt: try cells.date(),
                  closedAt: try cells.optionalDate(), updatedAt: try cells.date(), legalHold: try cells.next(),
                  purgedAt: try cells.optionalDate())
    }
}

extension Upload {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(), caseNumber: try cells.next(), filename: try cells.next(),
                  filetype: try cells.next(), rawMetadata: try cells.next(), length: try cells.next(),
                  offset: try cells.next(), state: try cells.value(UploadState.self),
                  declaredSHA256: try cells.next(), digestState: try cells.next(Data.self), sha256: try cells.next(),
                  createdBy: try cells.next(), createdAt: try cells.date(), updatedAt: try cells.date(),
                  completedAt: try cells.optionalDate(), purgedAt: try cells.optionalDate(),
                  concat: try cells.optionalValue(UploadConcat.self), createdByDropToken: try cells.next())
    }
}

extension CaseEvent {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(Int64.self), caseNumber: try cells.next(), kind: try cells.value(Kind.self),
                  status: try cells.value(CaseStatus.self), subStatus: try cells.next(), actor: try cells.next(),
                  comment: try cells.next(), at: try cells.date())
    }
}

extension PurgeRun {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(Int64.self), startedAt: try cells.date(), finishedAt: try cells.optionalDate(),
                  asOf: try cells.date(), retentionDays: Int(try cells.next(Int32.self)),
                  trigger: try cells.value(Trigger.self), state: try cells.value(State.self),
                  casesPurged: Int(try cells.next(Int32.self)), itemsPurged: Int(try cells.next(Int32.self)),
                  bytesFreed: try cells.next(), casesSkippedForHold: Int(try cells.next(Int32.self)),
                  itemsSkippedForHold: Int(try cells.next(Int32.self)), errors: try cells.next())
    }
}

extension PurgeItem {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(Int64.self), runID: try cells.next(), caseNumber: try cells.next(),
                  uploadID: try cells.next(), filename: try cells.next(),
                  previousState: try cells.value(UploadState.self), bytes: try cells.next(), at: try cells.date())
    }
}

extension DownloadLink {
    init(_ cells: inout Cells) throws {
        self.init(nonce: try cells.next(), uploadID: try cells.next(), userID: try cells.next(),
                  expiresAt: try cells.date(), issuedAt: try cells.optionalDate(), bytesServed: try cells.next())
    }
}

extension DropToken {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(Int64.self), caseNumber: try cells.next(), tokenHash: try cells.next(),
                  createdBy: try cells.next(), createdAt: try cells.date(), expiresAt: try cells.date(),
                  revokedAt: try cells.optionalDate(), lastUsedAt: try cells.optionalDate())
    }
}

extension OutboundEvent {
    init(_ cells: inout Cells) throws {
        self.init(id: try cells.next(), type: try cells.value(Kind.self), body: try cells.next(),
                  createdAt: try cells.date(), state: try cells.value(State.self), attempts: try cells.next(Int.self),
                  nextAttemptAt: try cells.date(), lastError: try cells.next(), deliveredTo: try cells.next(),
                  finishedAt: try cells.optionalDate())
    }
}

/// As `AppDatabase` reads them: a state or type no case has falls back to `pending` / `other`.
extension BundleIndex {
    init(_ cells: inout Cells) throws {
        self.init(attachmentID: try cells.next(),
                  state: BundleIndexState(rawValue: try cells.next(String.self)) ?? .pending,
                  format: try cells.next(String?.self).flatMap(BundleFormat.init(rawValue:)),
                  reason: try cells.next(), entryCount: try cells.next(Int.self), truncated: try cells.next(),
                  stoppedAt: try cells.next(), checkpointSpacing: try cells.next(), indexBytes: try cells.next(),
                  updatedAt: try cells.date())
    }
}

extension BundleEntry {
    init(_ cells: inout Cells) throws {
        let attachmentID: String = try cells.next(), number = try cells.next(Int.self), path: String = try cells.next()
        let size: Int64 = try cells.next(), modifiedAt = try cells.optionalDate()
        let type = BundleEntryType(rawValue: try cells.next(String.self)) ?? .other
        let linkTarget: String? = try cells.next(), dataOffset: Int64 = try cells.next()
        let compressedSize: Int64? = try cells.next(), method = try cells.next(Int?.self)
        let problem: String? = try cells.next(), sha256: String? = try cells.next(), flags: String = try cells.next()
        self.init(attachmentID: attachmentID, number: number, path: path, size: size, modifiedAt: modifiedAt,
                  type: type, linkTarget: linkTarget, dataOffset: dataOffset, compressedSize: compressedSize,
                  method: method, problem: problem, sha256: sha256,
                  flags: flags.isEmpty ? [] : flags.split(separator: ",").map(String.init))
    }
}

extension BundleCheckpoint {
    init(_ cells: inout Cells) throws {
        self.init(attachmentID: try cells.next(), number: try cells.next(Int.self), outputOffset: try cells.next(),
                  inputOffset: try cells.next(), bits: try cells.next(Int.self), window: try cells.next(Data.self))
    }
}
