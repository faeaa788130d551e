import Foundation
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// `casefiles backup` and `casefiles restore`: a storage root copied while the service runs, and back.
///
/// A backup takes the backup lease first (`BackupLeaseStore`), so from then on nothing removes a blob; then
/// SQLite's online backup copies the database as of one moment; then the blobs that copy names: verified ones
/// hard-linked where the destination is on the same file system (they never change), unfinished ones copied up to
/// the offset the copy commits (bytes past it are garbage that the next append truncates); then the key files.
/// The lease is renewed while the copy runs and released at the end; a crashed backup's lease expires after
/// `leaseTerm`. Everything written is private (folders 0700, files 0600: `PrivateStorage`).
public enum StorageBackup {
    /// How long a lease lasts without renewal (seconds); renewed every third of it.
    public static let leaseTerm: TimeInterval = 300

    public struct Report: Sendable {
        public var attachments = 0
        public var unfinished = 0
        public var linked = 0
        public var copied = 0
        public var bytesCopied: Int64 = 0
        /// Unfinished uploads whose blob was gone when copied (terminated meanwhile): `terminated` in the copy.
        public var goneUnfinished: [String] = []
        /// Verified attachments whose blob is missing: a damaged source (run `casefiles verify`).
        public var missingAttachments: [String] = []
        /// `PRAGMA integrity_check` of the copy.
        public var integrity = ""
    }

    /// Backs up the open storage root `root` (whose services are `services`) into `destination`, a new or empty folder.
    /// - Throws: `FolderNotEmpty`; `BackupLeaseTaken` when another backup runs; storage and database errors.
    public static func backup(services: AppServices, storage root: URL, to destination: URL) async throws -> Report {
        // Blobs in an object store are not under the root: the bucket is backed up with the store's own means.
        guard services.blobs is FileBlobStore else { throw BlobsNotUnderTheRoot() }
        let threads = services.blobs.threads
        try await threads.blockingIO { try PrivateFileCopy.makeEmptyFolder(destination.path) }
        let database = services.database
        let holder = SecureRandom.identifier()
        if let held = try await database.acquireBackupLease(
            holder: holder, until: services.now().addingTimeInterval(leaseTerm), at: services.now()) {
            throw BackupLeaseTaken(until: held.expiresAt)
        }
        let now = services.now
        let renewal = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(leaseTerm / 3))
                if Task.isCancelled { return }
                _ = try? await database.renewBackupLease(holder: holder, until: now().addingTimeInterval(leaseTerm))
            }
        }
        defer { renewal.cancel() }
        do {
            let report = try await threads.blockingIO {
                let databasePath = destination.appendingPathComponent(AppServices.databaseName).path
                try PrivateStorage.withPrivateUmask { try PrivateStorage.makeFile(databasePath) }
                try database.backupDatabase(to: databasePath)
                return try copyBlobsAndKeys(from: root, databaseCopy: databasePath, to: destination,
                                            threads: threads, now: now())
            }
            try await database.releaseBackupLease(holder: holder)
            return report
        } catch {
            try? await database.releaseBackupLease(holder: holder)
            throw error
        }
    }

    /// Restores the backup in `backup` into `root`, a new or empty folder. The backup is only read. Unfinished
    /// uploads are copied (they will be appended to); verified ones are hard-linked where possible.
    /// - Throws: `FolderNotEmpty`; `NotABackup` when `backup` holds no database; storage and database errors.
    public static func restore(from backup: URL, to root: URL, threads: StorageThreads, now: Date) async throws -> Report {
        try await threads.blockingIO {
            let source = backup.appendingPathComponent(AppServices.databaseName).path
            guard FileManager.default.fileExists(atPath: source) else { throw NotABackup(path: backup.path) }
            try PrivateFileCopy.makeEmptyFolder(root.path)
            let databasePath = root.appendingPathComponent(AppServices.databaseName).path
            try PrivateStorage.withPrivateUmask { try PrivateStorage.makeFile(databasePath) }
            try DatabaseCopy.restore(from: source, to: databasePath)
            return try copyBlobsAndKeys(from: backup, databaseCopy: databasePath, to: root, threads: threads, now: now)
        }
    }

    /// The blobs the database copy at `databaseCopy` names, from the storage root `source` into `destination`,
    /// then the key files; fixes up the copy (no lease; vanished unfinished uploads terminated) and checks it.
    @available(*, noasync, message: "copies files, blocking")
    private static func copyBlobsAndKeys(from source: URL, databaseCopy: String, to destination: URL,
                                         threads: StorageThreads, now: Date) throws -> Report {
        var report = Report()
        let copy = try DatabaseCopy(path: databaseCopy)
        defer { try? copy.close() }
        try copy.removeBackupLease()
        let from = try FileBlobStore(root: source, threads: threads)
        let to = try FileBlobStore(root: destination, threads: threads)
        for upload in try copy.blobOwners() {
            let verified = upload.state == .verified
            if verified { report.attachments += 1 } else { report.unfinished += 1 }
            do {
                switch try from.export(id: upload.id, length: upload.offset, to: to, link: verified) {
                case .linked: report.linked += 1
                case .copied(let bytes):
                    report.copied += 1
                    report.bytesCopied += bytes
                }
            } catch StorageError.missingBlob {
                if verified { report.missingAttachments.append(upload.id) } else { report.goneUnfinished.append(upload.id) }
            }
        }
        try copy.markTerminated(ids: report.goneUnfinished, at: now)
        report.integrity = try copy.integrityCheck()
        for name in [LinkKeyFile.name, WebhookSecretFile.name] {
            try PrivateFileCopy.copy(source.appendingPathComponent(name).path,
                                     to: destination.appendingPathComponent(name).path)
        }
        try to.syncFolders()
        try FileBlobStore.syncDirectory(destination.path)
        return report
    }
}

/// `casefiles backup` with the blobs in an object store (`CASEFILES_BLOB_STORE`).
public struct BlobsNotUnderTheRoot: Error, CustomStringConvertible {
    public var description: String {
        "the blobs are in an object store, not under the storage root: back up the bucket with the store's own means "
            + "(versioning, replication); this command copies a storage root with its blob files"
    }
}

/// Another backup holds the lease (until `until`): one backup at a time.
public struct BackupLeaseTaken: Error, CustomStringConvertible {
    public let until: Date
    public var description: String {
        "another backup is running (its lease lasts until \(until.formatted(.iso8601)), or until it finishes); try again later"
    }
}

public struct NotABackup: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "\(path) holds no \(AppServices.databaseName): not a backup made by `casefiles backup`" }
}
