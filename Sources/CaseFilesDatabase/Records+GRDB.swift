import CaseFilesCore
import GRDB

// How the core's records map to SQLite tables; the schema itself is AppDatabase's. Each record's `Columns`
// names the columns its queries use (the records live in Core, so the names are spelled here rather than
// taken from their CodingKeys); enums are stored as their raw values.

extension Role: DatabaseValueConvertible {}
extension CaseStatus: DatabaseValueConvertible {}
extension CasePriority: DatabaseValueConvertible {}
extension RequestType: DatabaseValueConvertible {}
extension UploadState: DatabaseValueConvertible {}
extension UploadConcat: DatabaseValueConvertible {}
extension CaseEvent.Kind: DatabaseValueConvertible {}
extension PurgeRun.Trigger: DatabaseValueConvertible {}
extension PurgeRun.State: DatabaseValueConvertible {}

extension User: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "user"

    public enum Columns {
        static let name = Column("name")
        static let tokenHash = Column("tokenHash")
        static let revokedAt = Column("revokedAt")
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension SupportCase: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "supportCase"

    public enum Columns {
        static let number = Column("number")
        static let account = Column("account")
        static let status = Column("status")
        static let closedAt = Column("closedAt")
        static let purgedAt = Column("purgedAt")
    }
}

extension Upload: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "upload"

    public enum Columns {
        static let id = Column("id")
        static let caseNumber = Column("caseNumber")
        static let state = Column("state")
        static let offset = Column("offset")
        static let updatedAt = Column("updatedAt")
        static let createdAt = Column("createdAt")
        static let purgedAt = Column("purgedAt")
        static let concat = Column("concat")
    }
}

extension CaseEvent: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "caseEvent"

    public enum Columns {
        static let id = Column("id")
        static let caseNumber = Column("caseNumber")
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension PurgeRun: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "purgeRun"

    public enum Columns {
        static let id = Column("id")
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension PurgeItem: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "purgeItem"

    public enum Columns {
        static let id = Column("id")
        static let runID = Column("runID")
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension Download: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "download"

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension DownloadLink: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "downloadLink"
}

extension DownloadEntry: FetchableRecord {}

extension DropToken: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "dropToken"

    public enum Columns {
        static let id = Column("id")
        static let caseNumber = Column("caseNumber")
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}
