import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import CaseFilesClient

/// `ChunkBuffers` and `FileWork`: the upload client's chunk memory is reused, never while another copy holds it,
/// and its file reads and hashing stay off Swift's cooperative threads.
@Suite struct ChunkBuffersTests {
    private func address(_ buffer: ByteBuffer) -> UInt {
        buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func aBufferHandedBackIsReusedEmpty() {
        let buffers = ChunkBuffers(kept: 3)
        var first = buffers.take(capacity: 1 << 16)
        first.writeBytes(Array(repeating: 7, count: 1 << 16))
        let storage = address(first)
        buffers.give(first)
        first = ByteBuffer()  // the uploader's own copy is gone once its chunk is done
        let again = buffers.take(capacity: 1 << 16)
        #expect(address(again) == storage)
        #expect(again.readableBytes == 0 && again.capacity >= 1 << 16)
        #expect(buffers.available == 0)
    }

    @Test func aBufferStillHeldElsewhereIsNotWrittenOver() {
        let buffers = ChunkBuffers(kept: 3)
        var chunk = buffers.take(capacity: 4096)
        chunk.writeString("sent, and still held by the HTTP client")
        let heldByClient = chunk
        buffers.give(chunk)
        chunk = ByteBuffer()
        var next = buffers.take(capacity: 4096)
        #expect(address(next) != address(heldByClient))
        next.writeString("the next chunk")
        #expect(heldByClient.getString(at: 0, length: heldByClient.readableBytes) == "sent, and still held by the HTTP client")
        #expect(buffers.available == 1)  // it waits for its holder to let go
    }

    @Test func atMostKeptBuffersWaitAndTheOldestGoesFirst() {
        let buffers = ChunkBuffers(kept: 2)
        var given: [UInt] = []
        for _ in 0..<3 {
            let buffer = ByteBufferAllocator().buffer(capacity: 4096)
            given.append(address(buffer))
            buffers.give(buffer)
        }
        #expect(buffers.available == 2)
        #expect(address(buffers.take(capacity: 4096)) == given[1])  // given[0] was dropped
        #expect(address(buffers.take(capacity: 4096)) == given[2])
    }

    /// As many blocking jobs as the blocking pool has threads (one per core), each waiting until this test's
    /// task lets it go: had `FileWork` run them on the cooperative threads (also one per core), no thread would
    /// be left for this task, and each job would give up after its timeout instead.
    @Test func fileWorkLeavesTheCooperativeThreadsFree() async throws {
        let threads = System.coreCount
        let started = NIOLockedValueBox(0)
        let release = DispatchSemaphore(value: 0)
        let jobs = (0..<threads).map { _ in
            Task {
                try await FileWork.run {
                    started.withLockedValue { $0 += 1 }
                    return release.wait(timeout: .now() + 20) == .success
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while started.withLockedValue({ $0 }) < threads && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        for _ in 0..<threads { release.signal() }
        for job in jobs { #expect(try await job.value) }
    }
}
