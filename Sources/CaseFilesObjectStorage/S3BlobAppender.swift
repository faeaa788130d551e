import Dispatch
import Foundation
import NIOCore
import CaseFilesCore
import CaseFilesOutbound
import CaseFilesStorage

/// Appends one request's bytes to a blob's multipart upload. Owned by exactly one request at a time (the upload's
/// writer lock), hence `@unchecked Sendable`.
///
/// Bytes gather in a buffer of one part (`S3PartLayout`: 8 MiB by default, growing every 1,000 parts); a full part
/// is handed to UploadPart in the background while the next one fills, so memory is bounded by two parts per open
/// appender (the one filling and the one being sent), and the hashing waits for the store only when a part fills
/// before the previous one is stored. `sync` stores the part not yet whole as the tail object of its part number.
/// Opening at an offset within a part fetches that part's committed bytes back from its tail object.
final class S3BlobAppender: BlobAppender, @unchecked Sendable {
    private let store: S3BlobStore
    private let id: String
    private let uploadID: String
    let layout: S3PartLayout
    let start: Int64
    private(set) var position: Int64
    /// The part being filled: its number, first byte's offset, size and bytes so far (from `partStart`).
    private var partNumber = 1
    private var partStart: Int64 = 0
    private var partCapacity = 0
    private var staging = ByteBuffer()
    private var inFlight: InFlightWrite?
    /// Where this appender's time went, in the file store's terms: `copy` into the part buffer; `writerWait`
    /// for the previous part's upload before a full part could be handed over; `deviceWrite` and
    /// `backgroundWrites` the UploadPart calls; `finalWrite` the wait in `sync` for the last one; `fdatasync`
    /// the tail object's PUT.
    private(set) var timings = BlobIOTimings()

    /// - Throws: `StorageError.io` when the committed tail is missing from the store.
    init(store: S3BlobStore, id: String, info: S3BlobStore.UploadInfo, start: Int64) async throws {
        self.store = store
        self.id = id
        self.uploadID = info.uploadID
        self.layout = S3PartLayout(basePartSize: info.partSize)
        self.start = start
        self.position = start
        try await loadCommittedHead()
    }

    var stagingRoom: Int { partCapacity - staging.readableBytes }

    /// Copies into the part buffer and hands it to UploadPart each time it is whole. Called on a bulk-work thread:
    /// a whole part waits there for the upload before it, if that is still going.
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let count = min(bytes.count - done, stagingRoom)
            let copyStarted = MonotonicClock.nanoseconds()
            staging.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[done..<(done + count)]))
            timings.copy += MonotonicClock.since(copyStarted)
            done += count
            position += Int64(count)
            if stagingRoom == 0 { try uploadWholePartInBackground() }
        }
    }

    /// Waits for the part being sent, then PUTs the part not yet whole as `blobs/<id>.tail-<n>`: every appended
    /// byte is then in the store.
    func sync() async throws {
        let waitStarted = MonotonicClock.nanoseconds()
        if let write = inFlight {
            inFlight = nil
            try await store.threads.blockingIO { try write.wait() }
            timings.deviceWrite += write.took
            timings.backgroundWrites += 1
        }
        let putStarted = MonotonicClock.nanoseconds()
        timings.finalWrite += putStarted &- waitStarted
        guard position > start, staging.readableBytes > 0 else { return }
        _ = try await store.client.putObject(key: store.tailKey(id, part: partNumber), body: staging)
        timings.fdatasync += MonotonicClock.since(putStarted)
    }

    /// Drops this request's bytes: waits out a part being sent (its bytes no longer count: the part is uploaded
    /// again or left out of the completion) and fetches the committed head of `start`'s part again.
    func discard() async throws {
        if let write = inFlight {
            inFlight = nil
            _ = try? await store.threads.blockingIO { try write.wait() }
        }
        position = start
        try await loadCommittedHead()
    }

    /// Sets the part being filled to the one holding `start`, with its committed bytes from its tail object.
    private func loadCommittedHead() async throws {
        partNumber = layout.part(containing: start)
        partStart = layout.start(ofPart: partNumber)
        try startPart()
        if start > partStart {
            staging = try await store.readTail(id, part: partNumber, count: start - partStart, into: staging)
        }
    }

    private func startPart() throws {
        guard partNumber <= S3PartLayout.maxParts else {
            throw StorageError.io(operation: "object store: a blob holds at most \(layout.capacity) bytes (10,000 parts)", errno: EFBIG)
        }
        partCapacity = Int(layout.size(ofPart: partNumber))
        staging = ByteBufferAllocator().buffer(capacity: partCapacity)
    }

    /// Hands the whole part to UploadPart on a task of its own and starts the next part, once the part before has
    /// been stored (and reported any error).
    private func uploadWholePartInBackground() throws {
        if let write = inFlight {
            inFlight = nil
            let waitStarted = MonotonicClock.nanoseconds()
            defer {
                timings.writerWait += MonotonicClock.since(waitStarted)
                timings.deviceWrite += write.took
                timings.backgroundWrites += 1
            }
            try write.wait()
        }
        let (client, key, uploadID, number, body) = (store.client, store.objectKey(id), uploadID, partNumber, staging)
        let write = InFlightWrite()
        Task {
            let started = MonotonicClock.nanoseconds()
            do {
                _ = try await client.uploadPart(key: key, uploadID: uploadID, partNumber: number, body: body)
                write.finish(.success(()), took: MonotonicClock.since(started))
            } catch {
                write.finish(.failure(error), took: MonotonicClock.since(started))
            }
        }
        inFlight = write
        partNumber += 1
        partStart += Int64(partCapacity)
        try startPart()
    }
}
