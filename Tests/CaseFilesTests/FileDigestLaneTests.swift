@testable import CaseFilesCore
@testable import CaseFilesEngine
import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

@Suite struct FileDigestLaneTests {
    /// Batches of every size, queued faster than one thread hashes them, come out as one SHA-256 over all of them
    /// in order, continuing the state the lane started from (a resumed upload's).
    @Test func batchesAreHashedInOrderFromTheRestoredState() async throws {
        let earlier = testBytes(12_345, seed: 1)
        var restored = SHA256Digest()
        restored.update(earlier)
        let lane = FileDigestLane(digest: restored, bulkWork: testWorkers.bulkWork)
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
    }

    /// A lane that cannot keep up holds at most `maxQueuedBytes`: the next batch waits for room, then goes through.
    @Test func aLaneThatLagsMakesTheProducerWait() async throws {
        let bulk = BulkWork(threadsPerPool: 1)
        let release = DispatchSemaphore(value: 0)
        bulk.submitSecondary { release.wait() }  // the lane's only thread is busy until released
        let lane = FileDigestLane(digest: SHA256Digest(), bulkWork: bulk)
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
}
