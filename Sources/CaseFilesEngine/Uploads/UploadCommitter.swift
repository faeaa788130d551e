import Foundation
import Logging
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// Makes a request's bytes count: fsync, then the offset and digest state in one SQLite transaction, then
/// (on the last byte) the verdict. That order makes an acknowledged byte survive any crash. The fault suite
/// kills the process between the steps (`Failpoint`: `append.after-fsync`, `complete.before-commit`,
/// `append.after-commit`).
package struct UploadCommitter: Sendable {
    package let database: any MetadataStore
    package let blobs: any BlobStore
    package let now: @Sendable () -> Date

    package init(services: AppServices) {
        self.database = services.database
        self.blobs = services.blobs
        self.now = services.now
    }

    /// Commits the bytes `sink` took past `upload.offset`, with `fileDigest` covering all of them, recording
    /// `sender` (a user id) as their author in the same transaction.
    /// - Returns: the upload as committed: its new offset, and on the last byte `verified`, or `failed` (the
    ///   whole-file SHA-256 is not the declared one; its blob is then removed).
    /// - Throws: storage errors from the fsync; `CaseClosedDuringUpload`; database errors (nothing recorded).
    package func commit(_ upload: Upload, by sender: Int64, sink: ChunkSink, fileDigest: SHA256Digest) async throws -> Upload {
        var upload = upload
        let newOffset = sink.position
        if newOffset > upload.offset { try await sink.sync() }
        Failpoint.hit("append.after-fsync")
        var completion: UploadCompletion?
        if let length = upload.length, newOffset == length {
            let sha256 = fileDigest.finalize().hexString
            upload.sha256 = sha256
            if let declared = upload.declaredSHA256, declared != sha256 {
                completion = .failed(sha256: sha256)
                upload.state = .failed
            } else {
                completion = .verified(sha256: sha256)
                upload.state = .verified
            }
        } else if newOffset == upload.offset {
            return upload
        }
        let now = self.now()
        if completion != nil { Failpoint.hit("complete.before-commit") }
        let commitStarted = MonotonicClock.nanoseconds()
        try await database.recordAppend(
            id: upload.id, by: sender, from: upload.offset, to: newOffset, digestState: fileDigest.savedState,
            completion: completion, at: now)
        sink.timeline.commit = MonotonicClock.since(commitStarted)
        Failpoint.hit("append.after-commit")
        upload.offset = newOffset
        upload.digestState = fileDigest.savedState
        upload.updatedAt = now
        if completion != nil { upload.completedAt = now }
        switch upload.state {
        case .failed: try? await blobs.remove(id: upload.id)
        // After the commit, so the metadata store never says `uploading` of a blob the store has finished (an
        // object store's completed multipart upload can no longer be appended to). A crash in between leaves a
        // verified upload with an unfinished blob, and so does a failure here (the upload IS verified: this
        // request must not fail, nor discard): the orphan sweep completes it, at the next start and after each
        // retention purge (`sweepOrphanBlobs`).
        case .verified:
            if let etag = try? await blobs.complete(id: upload.id, length: newOffset) {
                await Self.record(etag, of: upload.id, in: database)
            }
        default: break
        }
        return upload
    }

    /// Records a finished object's ETag (`MetadataStore.recordStoredObject`). Best effort: the upload is verified
    /// and served whatever happens here; a failure is logged and leaves `objectETag` empty.
    static func record(_ etag: String, of uploadID: String, in database: any MetadataStore) async {
        do {
            try await database.recordStoredObject(uploadID: uploadID, etag: etag)
        } catch {
            Logger(label: "casefiles").warning("the finished object's ETag was not recorded",
                                               metadata: ["upload": "\(uploadID)", "error": "\(error)"])
        }
    }
}
