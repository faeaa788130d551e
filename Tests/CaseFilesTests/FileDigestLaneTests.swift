@testable import CaseFilesCore
@testable import CaseFilesEngine
@testable import CaseFilesStorage
import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite struct FileDigestLaneTests {
    /// A blob store's root for the tests that write through a sink (a fresh one per test).
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("lane-\(UUID().uuidString)")

    /// Batches of every size, queued faster than one thread hashes them, come out as one SHA-256 over all of them
    /// in order, continuing the state the lane started from (a resumed upload's).
    @Test func batchesAreHashedInOrderFromTheRestoredState() async throws {
        let earlier = testBytes(12_345, seed: 1)
        var restored = SHA256Digest()
        restored.update(earlier)
        let bulk = BulkWork(threadsPerPool: 1)  // its own: the shared one's lane may be another test's
        let lane = try #require(FileDigestLane(digest: restored, bulkWork: bulk))
        var expected = SHA256Digest()
        expected.update(earlier)
        for n in 0..<60 {
            let sizes = [1, 4096, 65_537, 300_000].map { $0 + n }
            let buffers = sizes.enumerated().map { index, size in
                ByteBuffer(bytes: testBytes(size, seed: UInt64(n * 10 + index)))
            }
            for buffer in buffers { expected.update(buffer) }
            await lane.enqueue(buffers, bytes: sizes.reduce(0, +))
        }
        let (digest, hashTime) = await lane.drained()
        #expect(digest.finalize() == expected.finalize())
        #expect(hashTime > 0)
        try await bulk.shutdown()
    }

    /// A lane that cannot keep up holds at most `maxQueuedBytes`: the next batch waits for room, then goes through.
    @Test func aLaneThatLagsMakesTheProducerWait() async throws {
        let bulk = BulkWork(threadsPerPool: 1)
        let release = DispatchSemaphore(value: 0)
        bulk.submitSecondary { release.wait() }  // the lane's only thread is busy until released
        let lane = try #require(FileDigestLane(digest: SHA256Digest(), bulkWork: bulk))
        let batch = ByteBuffer(bytes: testBytes(ChunkSink.batchSize, seed: 7))
        let fitting = FileDigestLane.maxQueuedBytes / ChunkSink.batchSize
        for _ in 0..<fitting { await lane.enqueue([batch], bytes: batch.readableBytes) }
        let queuedOneMore = NIOLockedValueBox(false)
        let producer = Task {
            await lane.enqueue([batch], bytes: batch.readableBytes)
            queuedOneMore.withLockedValue { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!queuedOneMore.withLockedValue { $0 })
        release.signal()
        await producer.value
        #expect(queuedOneMore.withLockedValue { $0 })
        let (digest, _) = await lane.drained()
        var expected = SHA256Digest()
        for _ in 0...fitting { expected.update(batch) }
        #expect(digest.finalize() == expected.finalize())
        try await bulk.shutdown()
    }

    /// Only `maxFileLanes` lanes run at once; a place comes back when its lane has drained, or when a lane that
    /// never drained goes away (a request that failed before its body).
    @Test func onlyMaxFileLanesRunAtOnce() async throws {
        let bulk = BulkWork(threadsPerPool: 1, maxFileLanes: 1)
        var first = FileDigestLane(digest: SHA256Digest(), bulkWork: bulk)
        #expect(first != nil)
        #expect(FileDigestLane(digest: SHA256Digest(), bulkWork: bulk) == nil)
        _ = await first!.drained()
        var second = FileDigestLane(digest: SHA256Digest(), bulkWork: bulk)
        #expect(second != nil)
        first = nil  // drained already: its place is not given back twice
        #expect(FileDigestLane(digest: SHA256Digest(), bulkWork: bulk) == nil)  // `second` holds the place
        second = nil  // never drained
        #expect(FileDigestLane(digest: SHA256Digest(), bulkWork: bulk) != nil)
        let none = BulkWork(threadsPerPool: 1, maxFileLanes: 0)
        #expect(FileDigestLane(digest: SHA256Digest(), bulkWork: none) == nil)
        try await bulk.shutdown()
        try await none.shutdown()
    }

    /// The same body through a sink with a queued lane and through one in lockstep (no place free) gives the same
    /// blob, chunk digest and whole-file SHA-256, continuing a resumed upload's state.
    @Test func aQueuedLaneAndLockstepAgree() async throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let earlier = testBytes(4096 * 3, seed: 3)
        let body = testBytes(5 * ChunkSink.batchSize + 77_777, seed: 4)
        var restored = SHA256Digest()
        restored.update(earlier)
        var expectedFile = SHA256Digest()
        expectedFile.update(earlier)
        expectedFile.update(body)
        var expectedChunk = SHA256Digest()
        expectedChunk.update(body)
        for maxFileLanes in [1, 0] {
            let bulk = BulkWork(threadsPerPool: 1, maxFileLanes: maxFileLanes)
            let id = SecureRandom.identifier()
            try await store.create(id: id)
            let head = try await store.openForAppend(id: id, at: 0)
            try earlier.withUnsafeBytes { try head.append($0) }
            try await head.sync()
            let sink = ChunkSink(chunkDigest: ChunkDigest(.sha256), fileDigest: restored,
                                 appender: try await store.openForAppend(id: id, at: Int64(earlier.count)),
                                 bulkWork: bulk, timeline: AppendTimeline(upload: id, offset: Int64(earlier.count), started: 0))
            var sent = 0
            while sent < body.count {  // socket-read-sized pieces, as an event loop hands them over
                let piece = min(200_003, body.count - sent)
                try await sink.consume(ByteBuffer(bytes: body[sent..<sent + piece]))
                sent += piece
            }
            try await sink.flush()
            await sink.settle()
            try await sink.sync()
            #expect(sink.timeline.fileLane == (maxFileLanes == 1))
            #expect(sink.chunkDigest?.finalize() == expectedChunk.finalize())
            #expect(sink.fileDigest.finalize() == expectedFile.finalize())
            let reader = try await store.openForReading(id: id)
            let stored = try await reader.read(at: 0, count: earlier.count + body.count + 1, allocator: ByteBufferAllocator())
            #expect(Array(buffer: stored) == earlier + body)
            try await bulk.shutdown()
        }
    }

    /// Through the engine's body reader: a body cut off by its connection took the lane at its first large batch,
    /// gives the place back, and its whole-file SHA-256 covers exactly the bytes that arrived; a small body never
    /// takes the place at all.
    @Test func aCutBodyGivesTheLaneBackAndASmallOneNeverTakesIt() async throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let bulk = BulkWork(threadsPerPool: 1, maxFileLanes: 1)
        for (size, cut) in [(3 * ChunkSink.batchSize + 5, true), (ChunkSink.parallelHashingThreshold - 1, false)] {
            let id = SecureRandom.identifier()
            try await store.create(id: id)
            let sink = ChunkSink(chunkDigest: ChunkDigest(.sha256), fileDigest: SHA256Digest(),
                                 appender: try await store.openForAppend(id: id, at: 0), bulkWork: bulk,
                                 timeline: AppendTimeline(upload: id, offset: 0, started: 0))
            let sent = testBytes(size, seed: UInt64(size))
            let (body, connection) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
            var at = 0
            while at < sent.count {
                let piece = min(300_007, sent.count - at)
                connection.yield(ByteBuffer(bytes: sent[at..<at + piece]))
                at += piece
            }
            if cut { connection.finish(throwing: CancellationError()) } else { connection.finish() }
            let outcome = await BodyReceiver.receive(body, into: sink, room: nil,
                                                     contentLength: Int64(size) + (cut ? 1_000 : 0), writer: nil)
            #expect((outcome.bodyError != nil) == cut)
            #expect(outcome.received == Int64(size))
            #expect(sink.timeline.fileLane == cut)
            #expect(outcome.fileDigest.finalize() == SHA256Digest.hash(sent))
            #expect(bulk.takeFileLane())  // the place is free while the sink still lives
            bulk.returnFileLane()
            withExtendedLifetime(sink) {}
        }
        try await bulk.shutdown()
    }
}
