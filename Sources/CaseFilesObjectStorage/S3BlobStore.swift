import Foundation
import NIOCore
import CaseFilesCore
import CaseFilesOutbound
import CaseFilesStorage

/// Blobs in an S3-compatible bucket (`serve --blob-store s3://BUCKET`), as tusd's s3store keeps them: each blob is
/// a multipart upload while it is written and one object once its upload is verified.
///
/// Keys, for blob `<id>`:
/// - `blobs/<id>`: the multipart upload's key while unfinished, the finished object after `complete`.
/// - `blobs/<id>.upload`: a small JSON object made by `create`: the multipart `UploadId` and the blob's first part
///   size (`S3PartLayout`), so an append on any node finds both with one GET and no table of its own; removed by
///   `complete`.
/// - `blobs/<id>.tail-<n>`: the bytes of part `n` that are durable but not yet a whole part, PUT by every
///   `sync` (before the offset is committed, so every acknowledged byte is in the store). Named by part number
///   so that a sync that never got committed (a crash before the metadata commit) cannot destroy the committed
///   tail of an earlier part: tails other than the committed offset's are deleted only by the next
///   `openForAppend`, whose offset the metadata store has made durable.
///
/// The metadata store's committed offset is the authority: parts before the part that holds it are whole and
/// hold committed bytes; that part and any later one may hold bytes of a request cut before its commit, and are
/// uploaded again (S3 replaces a part number uploaded twice) or left out of the completion.
public struct S3BlobStore: BlobStore {
    public let threads: StorageThreads
    let client: S3Client
    /// The first part size of blobs created from now on, in bytes (a blob keeps the one it was created with).
    let partSize: Int64

    /// Where the keys start: `blobs/` (tests give each run a prefix of its own, as two deployments sharing a
    /// bucket could).
    let prefix: String

    /// - Parameters: partSize: bytes, at least `ObjectStoreSettings.minimumPartSize`; prefix: ends with `/`;
    ///   threads: where the blocking reads (`BlobReader.read(at:into:)`) wait.
    public init(client: S3Client, partSize: Int64 = ObjectStoreSettings.defaultPartSize, prefix: String = "blobs/",
                threads: StorageThreads) {
        precondition(partSize >= ObjectStoreSettings.minimumPartSize, "S3 parts are at least 5 MiB but the last")
        precondition(prefix.hasSuffix("/"))
        self.client = client
        self.partSize = partSize
        self.prefix = prefix
        self.threads = threads
    }

    func objectKey(_ id: String) -> String {
        // Ids are generated here as hex; refuse anything else so no id can name another key.
        precondition(SecureRandom.isIdentifier(id), "invalid blob id")
        return prefix + id
    }
    func infoKey(_ id: String) -> String { objectKey(id) + ".upload" }
    func tailPrefix(_ id: String) -> String { objectKey(id) + ".tail-" }
    func tailKey(_ id: String, part: Int) -> String { tailPrefix(id) + String(part) }

    /// What `create` records of a blob's multipart upload (`blobs/<id>.upload`).
    struct UploadInfo: Codable, Equatable {
        var uploadID: String
        var partSize: Int64
    }

    // MARK: BlobStore

    /// CreateMultipartUpload, then its id and part size in `blobs/<id>.upload`: both stored before the upload's row.
    public func create(id: String) async throws {
        let uploadID = try await client.createMultipartUpload(key: objectKey(id))
        let info = try JSONEncoder().encode(UploadInfo(uploadID: uploadID, partSize: partSize))
        _ = try await client.putObject(key: infoKey(id), body: ByteBuffer(bytes: info))
    }

    public func openForAppend(id: String, at offset: Int64) async throws -> any BlobAppender {
        guard let info = try await uploadInfo(id) else { throw StorageError.missingBlob(id) }
        let appender = try await S3BlobAppender(store: self, id: id, info: info, start: offset)
        // Tails of other parts are garbage now that `offset` is committed: earlier parts are whole, and tails of
        // later ones come from syncs whose commit never happened.
        let keep = tailKey(id, part: appender.layout.part(containing: offset))
        for tail in try await client.listObjects(prefix: tailPrefix(id)) where tail.key != keep {
            try await client.deleteObject(key: tail.key)
        }
        return appender
    }

    /// CompleteMultipartUpload of parts 1 ... n-1 (checked with ListParts: each there, of its layout size) and the
    /// tail as part n, the last; a blob within its first part is PUT whole from its tail instead (S3 refuses a
    /// completion without parts, and it is one request). Then the tails and `.upload` are deleted. Idempotent:
    /// an object already of `length` bytes only has its leftovers deleted.
    /// - Returns: the finished object's ETag (CompleteMultipartUpload's, PutObject's, or HeadObject's when it was
    ///   already finished), for the metadata store (`recordStoredObject`).
    @discardableResult
    public func complete(id: String, length: Int64) async throws -> String? {
        if let object = try await client.headObject(key: objectKey(id)), object.size == length {
            try await removeLeftovers(id)
            return object.etag
        }
        guard let info = try await uploadInfo(id) else { throw StorageError.missingBlob(id) }
        let layout = S3PartLayout(basePartSize: info.partSize)
        let last = layout.part(containing: length)
        let tailLength = length - layout.start(ofPart: last)
        let tail = tailLength > 0 ? try await readTail(id, part: last, count: tailLength) : ByteBuffer()
        let etag: String
        do {
            etag = try await finish(id, info: info, layout: layout, last: last, tail: tail)
        } catch {
            // Another completion (the sweep, a retry) may have finished it meanwhile.
            guard let object = try await client.headObject(key: objectKey(id)), object.size == length else { throw error }
            etag = object.etag
        }
        try await removeLeftovers(id)
        return etag
    }

    /// Completes the upload whose part `last` holds its final bytes (`tail`, the part not yet whole): one PutObject
    /// when that is part 1 (S3 refuses a completion without parts), else CompleteMultipartUpload of the parts before
    /// it and the tail uploaded as part `last`. - Returns: the finished object's ETag.
    private func finish(_ id: String, info: UploadInfo, layout: S3PartLayout, last: Int, tail: ByteBuffer) async throws -> String {
        if last == 1 {
            let etag = try await client.putObject(key: objectKey(id), body: tail)
            try await abortIgnoringMissing(id, uploadID: info.uploadID)
            return etag
        }
        let listed = Dictionary(try await client.listParts(key: objectKey(id), uploadID: info.uploadID)
            .map { ($0.partNumber, $0) }, uniquingKeysWith: { $1 })
        var parts: [S3CompletedPart] = []
        for number in 1..<last {
            guard let part = listed[number], part.size == nil || part.size == layout.size(ofPart: number) else {
                throw StorageError.io(operation: "object store: part \(number) of blob \(id) is missing or not whole", errno: EIO)
            }
            parts.append(S3CompletedPart(partNumber: number, etag: part.etag))
        }
        if tail.readableBytes > 0 {
            let etag = try await client.uploadPart(key: objectKey(id), uploadID: info.uploadID, partNumber: last, body: tail)
            parts.append(S3CompletedPart(partNumber: last, etag: etag))
        }
        return try await client.completeMultipartUpload(key: objectKey(id), uploadID: info.uploadID, parts: parts)
    }

    public func openForReading(id: String) async throws -> any BlobReader {
        guard let object = try await client.headObject(key: objectKey(id)) else { throw StorageError.missingBlob(id) }
        return S3BlobReader(client: client, key: object.key, size: object.size)
    }

    /// Aborts the multipart upload (the recorded one and any other on the key: a crash between CreateMultipartUpload
    /// and the `.upload` PUT, or a record that cannot be read), deletes the object and the tails, and `.upload` last, so an interrupted removal can
    /// be repeated.
    public func remove(id: String) async throws {
        let key = objectKey(id)
        // A record that cannot be read (damaged, a foreign object) does not stop the removal: the listing finds the upload.
        if let info = try? await uploadInfo(id) { try await abortIgnoringMissing(id, uploadID: info.uploadID) }
        for upload in try await client.listMultipartUploads(prefix: key) where upload.key == key {
            try await abortIgnoringMissing(id, uploadID: upload.uploadID)
        }
        try await client.deleteObject(key: key)
        try await removeLeftovers(id)
    }

    /// Objects, tails, `.upload` records and multipart uploads under `blobs/`, by blob id, with the newest of their
    /// times; `unfinished` when anything but the finished object is there.
    public func storedBlobs() async throws -> [StoredBlob] {
        var blobs: [String: StoredBlob] = [:]
        func note(_ name: Substring, _ date: Date, unfinished: Bool) {
            let id = String(name.prefix { $0 != "." })
            // Only names this store could have made; anything else in the bucket is left alone.
            guard SecureRandom.isIdentifier(id) else { return }
            var blob = blobs[id] ?? StoredBlob(id: id, lastModified: date, unfinished: unfinished)
            blob.lastModified = max(blob.lastModified, date)
            blob.unfinished = blob.unfinished || unfinished
            blobs[id] = blob
        }
        for object in try await client.listObjects(prefix: prefix) {
            let name = object.key.dropFirst(prefix.count)
            note(name, object.lastModified, unfinished: name.contains("."))
        }
        for upload in try await client.listMultipartUploads(prefix: prefix) {
            note(upload.key.dropFirst(prefix.count), upload.initiated, unfinished: true)
        }
        return blobs.values.sorted { $0.id < $1.id }
    }

    /// An object store has no free-space figure: the free-space rule has nothing to check (size and case quotas
    /// still apply).
    public func availableBytes() async throws -> Int64? { nil }

    // MARK: Helpers

    func uploadInfo(_ id: String) async throws -> UploadInfo? {
        let body: S3ObjectBody
        do {
            body = try await client.getObject(key: infoKey(id), range: nil)
        } catch let error as S3Error where error.status == 404 {
            return nil
        }
        var bytes = ByteBuffer()
        for try await piece in body {
            bytes.writeImmutableBuffer(piece)
            guard bytes.readableBytes <= 64 << 10 else { throw StorageError.io(operation: "object store: \(infoKey(id)) too large", errno: EIO) }
        }
        return try JSONDecoder().decode(UploadInfo.self, from: Data(bytes.readableBytesView))
    }

    /// The first `count` bytes of part `part`'s tail object.
    /// - Throws: `StorageError.io` when the tail is missing or shorter: committed bytes are gone from the store.
    func readTail(_ id: String, part: Int, count: Int64, into buffer: ByteBuffer = ByteBuffer()) async throws -> ByteBuffer {
        var buffer = buffer
        let before = buffer.readableBytes
        do {
            for try await piece in try await client.getObject(key: tailKey(id, part: part), range: 0..<count) {
                buffer.writeImmutableBuffer(piece)
            }
        } catch let error as S3Error where error.status == 404 || error.status == 416 {
            throw StorageError.io(operation: "object store: tail \(tailKey(id, part: part)) is missing", errno: EIO)
        }
        guard Int64(buffer.readableBytes - before) == count else {
            throw StorageError.io(operation: "object store: tail \(tailKey(id, part: part)) holds \(buffer.readableBytes - before) of \(count) committed bytes", errno: EIO)
        }
        return buffer
    }

    private func abortIgnoringMissing(_ id: String, uploadID: String) async throws {
        do {
            try await client.abortMultipartUpload(key: objectKey(id), uploadID: uploadID)
        } catch let error as S3Error where error.status == 404 {
            // Already completed or aborted.
        }
    }

    /// Deletes the tails, then `.upload`.
    private func removeLeftovers(_ id: String) async throws {
        for tail in try await client.listObjects(prefix: tailPrefix(id)) {
            try await client.deleteObject(key: tail.key)
        }
        try await client.deleteObject(key: infoKey(id))
    }
}
