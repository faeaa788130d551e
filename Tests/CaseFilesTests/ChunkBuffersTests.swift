import Foundation
import NIOCore
import Testing
@testable import CaseFilesClient

/// `ChunkBuffers` and `FileWork`: the upload client's chunk memory is reused, never while another copy holds it,
/// and its file reads and hashing run on NIO's blocking pool, off Swift's cooperative threads.
@Suite struct ChunkBuffersTests {
    private func address(_ buffer: ByteBuffer) -> UInt {
        buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func aBufferHandedBackIsReusedEmpty() {
        let buffers = ChunkBuffers(retained: 2)
        var first = buffers.take(capacity: 1 << 16)
        first.writeBytes(Array(repeating: 7, count: 1 << 16))
        let storage = address(first)
        buffers.give(first)
        first = ByteBuffer()  // the uploader's own copy is gone once its chunk is done
        let again = buffers.take(capacity: 1 << 16)
        #expect(address(again) == storage)
        #expect(again.readableBytes == 0 && again.capacity >= 1 << 16)
        #expect(buffers.idleCount == 0)
    }

    @Test func aBufferStillHeldElsewhereIsNotWrittenOver() {
        let buffers = ChunkBuffers(retained: 2)
        var chunk = buffers.take(capacity: 4096)
        chunk.writeString("sent, and still held by the HTTP client")
        let heldByClient = chunk
        buffers.give(chunk)
        chunk = ByteBuffer()
        var next = buffers.take(capacity: 4096)
        #expect(address(next) != address(heldByClient))
        next.writeString("the next chunk")
        #expect(heldByClient.getString(at: 0, length: heldByClient.readableBytes) == "sent, and still held by the HTTP client")
        #expect(buffers.idleCount == 1)  // it waits for its holder to let go
    }

    @Test func atMostRetainedBuffersWaitAndTheOldestGoesFirst() {
        let buffers = ChunkBuffers(retained: 2)
        var given: [UInt] = []
        for _ in 0..<3 {
            let buffer = ByteBufferAllocator().buffer(capacity: 4096)
            given.append(address(buffer))
            buffers.give(buffer)
        }
        #expect(buffers.idleCount == 2)
        #expect(address(buffers.take(capacity: 4096)) == given[1])  // given[0] was dropped
        #expect(address(buffers.take(capacity: 4096)) == given[2])
    }

    #if os(Linux)
    /// The reads and hashing run on NIO's shared blocking pool (its threads are named `SGLTN-TP-#n`), never on
    /// Swift's cooperative threads, where a 20 ms hash holds a thread the sends need.
    @Test func fileWorkRunsOnTheBlockingPool() async throws {
        let names = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<4 { group.addTask { try await FileWork.run { Self.currentThreadName() } } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(names.count == 4)
        for name in names { #expect(name.hasPrefix("SGLTN-TP-#"), "ran on \(name)") }
        #expect(!Self.currentThreadName().contains("TP-#"))  // the test's own task: a cooperative thread
    }

    /// The calling thread's name, as the kernel has it (`pthread_setname_np`, which NIO's threads use).
    private static func currentThreadName() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
    #endif
}
