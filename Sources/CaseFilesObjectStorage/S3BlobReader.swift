import Dispatch
import Foundation
import NIOCore
import CaseFilesOutbound
import CaseFilesStorage

/// Reads a finished blob object with ranged GETs, streamed: a read that continues where the last one ended takes
/// its bytes from the same open GET (`bytes=offset-` to the end), so a download, a verification pass or the bundle
/// index's pass is one request, not one per read; a read elsewhere (a seek) starts a new GET. One consumer at a
/// time (downloads open a reader each), hence `@unchecked Sendable`.
final class S3BlobReader: BlobReader, @unchecked Sendable {
    private let client: S3Client
    private let key: String
    /// The object's size in bytes (HeadObject at open).
    let size: Int64
    private var body: S3ObjectBody.AsyncIterator?
    /// The blob offset of the next byte `body` gives (after `pending`).
    private var next: Int64 = 0
    /// Bytes received from `body` and not yet handed out.
    private var pending = ByteBuffer()

    init(client: S3Client, key: String, size: Int64) {
        self.client = client
        self.key = key
        self.size = size
    }

    func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) async throws -> ByteBuffer {
        let want = Int(min(Int64(count), max(0, size - offset)))
        guard want > 0 else { return allocator.buffer(capacity: 0) }
        if body == nil || offset != next {
            body = try await client.getObject(key: key, range: offset..<size).makeAsyncIterator()
            next = offset
            pending.clear()
        }
        var out: ByteBuffer?
        while (out?.readableBytes ?? 0) < want {
            if pending.readableBytes == 0 {
                var iterator = body!
                let piece = try await iterator.next()
                body = iterator
                guard let piece else {
                    body = nil
                    throw StorageError.io(operation: "object store: \(key) ended at \(next) of \(size) bytes", errno: EIO)
                }
                pending = piece
            }
            let slice = pending.readSlice(length: min(want - (out?.readableBytes ?? 0), pending.readableBytes))!
            // The first piece is handed out as it came (no copy); only a read across pieces copies.
            if out == nil { out = slice } else { out!.writeImmutableBuffer(slice) }
        }
        next = offset + Int64(want)
        return out!
    }

    /// The async read, waited for on this (blocking) thread: the GET runs on the HTTP client's event loops.
    @available(*, noasync, message: "it blocks: run it on a blocking thread")
    func read(at offset: Int64, into target: UnsafeMutableRawBufferPointer) throws -> Int {
        let outcome = BlockingResult<ByteBuffer>()
        let count = target.count
        Task {
            do {
                outcome.finish(.success(try await self.read(at: offset, count: count, allocator: ByteBufferAllocator())))
            } catch {
                outcome.finish(.failure(error))
            }
        }
        let buffer = try outcome.wait()
        return buffer.withUnsafeReadableBytes { bytes in
            target.copyMemory(from: bytes)
            return bytes.count
        }
    }
}
