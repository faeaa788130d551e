@testable import CaseFilesCore
@testable import CaseFilesObjectStorage
@testable import CaseFilesOutbound
@testable import CaseFilesStorage
import Foundation
import NIOCore
import Testing

@Suite struct S3PartLayoutTests {
    @Test func partsDoubleEveryThousandAndTenThousandHoldAlmostEightTebibytes() {
        let mib: Int64 = 1 << 20
        let layout = S3PartLayout(basePartSize: 8 * mib)
        #expect(layout.size(ofPart: 1) == 8 * mib)
        #expect(layout.size(ofPart: 1000) == 8 * mib)
        #expect(layout.size(ofPart: 1001) == 16 * mib)
        #expect(layout.size(ofPart: 10_000) == 4096 * mib)
        #expect(layout.start(ofPart: 2) == 8 * mib)
        #expect(layout.start(ofPart: 1001) == 8000 * mib)
        #expect(layout.start(ofPart: 1002) == 8016 * mib)
        #expect(layout.start(ofPart: 2001) == 8000 * mib + 16_000 * mib)
        #expect(layout.part(containing: 0) == 1)
        #expect(layout.part(containing: 8 * mib - 1) == 1)
        #expect(layout.part(containing: 8 * mib) == 2)
        #expect(layout.part(containing: 8000 * mib - 1) == 1000)
        #expect(layout.part(containing: 8000 * mib) == 1001)
        #expect(layout.part(containing: 8016 * mib) == 1002)
        #expect(layout.capacity == 1000 * 8 * mib * 1023)
        #expect(layout.part(containing: layout.capacity - 1) == 10_000)
        #expect(layout.part(containing: layout.capacity) == 10_001)
    }
}

/// S3BlobStore against the real object store (`Scripts/objectstore start`, which Scripts/test runs): skipped when
/// CASEFILES_TEST_S3_ENDPOINT is unset.
@Suite(.enabled(if: S3TestStore.isConfigured, Comment(rawValue: S3TestStore.skipMessage)))
struct S3BlobStoreTests {
    static let mib = 1 << 20
    /// S3's smallest part, so a few MiB cross parts.
    static let partSize = Int64(5 * mib)

    func withStore<T: Sendable>(_ body: (S3BlobStore, S3Client) async throws -> T) async throws -> T {
        try await S3TestStore.with { client, prefix in
            try await body(S3BlobStore(client: client, partSize: Self.partSize, prefix: prefix, threads: testWorkers.storage),
                           client)
        }
    }

    func append(_ store: S3BlobStore, _ id: String, at offset: Int64, _ bytes: [UInt8]) async throws -> any BlobAppender {
        let appender = try await store.openForAppend(id: id, at: offset)
        let pieces = stride(from: 0, to: bytes.count, by: 300_007).map { bytes[$0..<min($0 + 300_007, bytes.count)] }
        try await testWorkers.bulkWork.run {
            for piece in pieces { try piece.withUnsafeBytes { try appender.append($0) } }
        }
        return appender
    }

    func keys(_ store: S3BlobStore, _ client: S3Client, _ id: String) async throws -> Set<String> {
        Set(try await client.listObjects(prefix: store.objectKey(id)).map(\.key))
    }

    @Test func cutRequestsAreDroppedAndTheCompletedObjectHoldsExactlyTheCommittedBytes() async throws {
        try await withStore { store, client in
            let id = SecureRandom.identifier()
            try await store.create(id: id)
            var expected: [UInt8] = []

            // 1: 7 MiB: part 1 (5 MiB) uploaded, 2 MiB in the tail of part 2; committed.
            let first = testBytes(7 * Self.mib, seed: 1)
            let one = try await append(store, id, at: 0, first)
            try await one.sync()
            expected += first
            #expect(try await keys(store, client, id) == [store.infoKey(id), store.tailKey(id, part: 2)])

            // 2: a request cut before its commit after its sync (a crash between the two): 6 MiB more, so part 2 is
            // uploaded with bytes that never count and the tail of part 3 holds more of them.
            let cut = try await append(store, id, at: 7 * Int64(Self.mib), testBytes(6 * Self.mib, seed: 99))
            try await cut.sync()
            // 2b: one discarded (a failed checksum) after it uploaded part 2 again.
            let discarded = try await append(store, id, at: 7 * Int64(Self.mib), testBytes(4 * Self.mib, seed: 98))
            try await discarded.discard()
            #expect(discarded.position == 7 * Int64(Self.mib))

            // 3: reopened at the committed 7 MiB: the tail of part 2 is fetched back, the cut's tail of part 3 deleted.
            let third = testBytes(4 * Self.mib + 12_345, seed: 3)
            let three = try await append(store, id, at: Int64(expected.count), third)
            #expect(try await keys(store, client, id) == [store.infoKey(id), store.tailKey(id, part: 2)])
            try await three.sync()
            expected += third
            // Part 2's tail stays until an open at a committed offset past it.
            #expect(try await keys(store, client, id)
                    == [store.infoKey(id), store.tailKey(id, part: 2), store.tailKey(id, part: 3)])

            // 4: a small last request, within part 3.
            let fourth = testBytes(777_777, seed: 4)
            let four = try await append(store, id, at: Int64(expected.count), fourth)
            #expect(try await keys(store, client, id) == [store.infoKey(id), store.tailKey(id, part: 3)])
            try await four.sync()
            expected += fourth

            let etag = try await store.complete(id: id, length: Int64(expected.count))
            // Idempotent, and the same identity the second time: the finished object's ETag (a multipart one).
            #expect(try await store.complete(id: id, length: Int64(expected.count)) == etag)
            let headed = try await client.headObject(key: store.objectKey(id))
            #expect(etag != nil && etag == headed?.etag)
            #expect(etag?.hasSuffix("-3\"") == true)
            #expect(try await keys(store, client, id) == [store.objectKey(id)])
            #expect(try await client.listMultipartUploads(prefix: store.objectKey(id)).isEmpty)
            #expect(try await store.storedBlobs().first { $0.id == id }?.unfinished == false)

            // Sequential reads (one streamed GET) give every byte.
            let reader = try await store.openForReading(id: id)
            var digest = SHA256Digest()
            var offset: Int64 = 0
            while true {
                let buffer = try await reader.read(at: offset, count: Self.mib, allocator: ByteBufferAllocator())
                if buffer.readableBytes == 0 { break }
                digest.update(buffer)
                offset += Int64(buffer.readableBytes)
            }
            #expect(offset == Int64(expected.count))
            var whole = SHA256Digest()
            expected.withUnsafeBytes { whole.update($0) }
            #expect(digest.finalize().hexString == whole.finalize().hexString)

            // A ranged read across the part 1 / part 2 boundary, and the blocking read the bundle index uses.
            let at = Int64(5 * Self.mib - 100)
            let range = try await reader.read(at: at, count: 300, allocator: ByteBufferAllocator())
            #expect(Array(buffer: range) == Array(expected[Int(at)..<Int(at) + 300]))
            nonisolated(unsafe) let target = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 8)
            defer { target.deallocate() }
            let tailAt = Int64(expected.count - 400)
            let count = try await testWorkers.storage.blockingIO { try reader.read(at: tailAt, into: target) }
            #expect(count == 400)
            #expect(Array(target[0..<400]) == Array(expected[(expected.count - 400)...]))

            try await store.remove(id: id)
            #expect(try await keys(store, client, id).isEmpty)
        }
    }

    @Test func aBlobWithinItsFirstPartAndAnEmptyOneCompleteAsPlainObjects() async throws {
        try await withStore { store, client in
            let small = SecureRandom.identifier(), empty = SecureRandom.identifier()
            try await store.create(id: small)
            try await store.create(id: empty)
            let bytes = testBytes(100_000, seed: 5)
            let appender = try await append(store, small, at: 0, bytes)
            try await appender.sync()
            try await store.complete(id: small, length: 100_000)
            try await store.complete(id: empty, length: 0)
            let read = try await store.openForReading(id: small).read(at: 0, count: 200_000, allocator: ByteBufferAllocator())
            #expect(Array(buffer: read) == bytes)
            let nothing = try await store.openForReading(id: empty).read(at: 0, count: 10, allocator: ByteBufferAllocator())
            #expect(nothing.readableBytes == 0)
            #expect(try await keys(store, client, small) == [store.objectKey(small)])
            #expect(try await client.listMultipartUploads(prefix: store.objectKey(empty)).isEmpty)
            try await store.remove(id: small)
            try await store.remove(id: empty)
        }
    }

    @Test func removeLeavesNothingAndTheSweepListsUnfinishedBlobsWithTheirAge() async throws {
        try await withStore { store, client in
            let unfinished = SecureRandom.identifier(), finished = SecureRandom.identifier()
            let before = Date().addingTimeInterval(-60)
            try await store.create(id: unfinished)
            try await store.create(id: finished)
            let appender = try await append(store, unfinished, at: 0, testBytes(6 * Self.mib, seed: 6))
            try await appender.sync()
            try await store.complete(id: finished, length: 0)

            let listed = Dictionary(try await store.storedBlobs().map { ($0.id, $0) }, uniquingKeysWith: { $1 })
            #expect(listed[unfinished]?.unfinished == true)
            #expect(listed[finished]?.unfinished == false)
            #expect(try #require(listed[unfinished]).lastModified > before)

            try await store.remove(id: unfinished)
            try await store.remove(id: finished)
            try await store.remove(id: finished)  // idempotent
            #expect(try await keys(store, client, unfinished).isEmpty)
            #expect(try await client.listMultipartUploads(prefix: store.objectKey(unfinished)).isEmpty)
            let after = try await store.storedBlobs().map(\.id)
            #expect(!after.contains(unfinished) && !after.contains(finished))
            await #expect(throws: StorageError.missingBlob(unfinished)) { try await store.openForAppend(id: unfinished, at: 0) }
        }
    }
}
