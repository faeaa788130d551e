import CaseFilesCore
import GRDB

// How the core's records map to SQLite tables; the schema itself is AppDatabase's.

extension Role: DatabaseValueConvertible {}
extension CaseStatus: DatabaseValueConvertible {}
extension CasePriority: DatabaseValueConvertible {}
extension RequestType: DatabaseValueConvertible {}
extension UploadState: DatabaseValueConvertible {}
extension CaseEvent.Kind: DatabaseValueConvertible {}

extension User: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "user"
}

extension SupportCase: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "supportCase"
}

extension Upload: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "upload"
}

extension CaseEvent: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "caseEvent"
}

extension PurgeRun: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "purgeRun"
}

extension PurgeItem: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "purgeItem"
}

extension Download: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "download"
}

extension DownloadLink: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "downloadLink"
}
