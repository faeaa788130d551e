@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import Testing

/// The upload engine's rules without a server: what becomes of a request's bytes (`AppendDecision`), what
/// each stop answers, the room an upload has left, and the writer's stop reasons.
@Suite struct AppendDecisionTests {
    static let sha256 = ChecksumAlgorithm.sha256

    @Test func aCompleteBodyWithoutAChecksumIsCommitted() {
        #expect(AppendDecision.decide(AppendOutcome(received: 10), checksum: .absent) == .commit(then: nil))
    }

    @Test func aCompleteBodyWhoseChecksumMatchesIsCommitted() {
        #expect(AppendDecision.decide(AppendOutcome(received: 10), checksum: .matched) == .commit(then: nil))
    }

    @Test func aChecksumMismatchDiscardsTheBytes() {
        #expect(AppendDecision.decide(AppendOutcome(received: 10), checksum: .mismatched(.sha1))
                == .discard(.checksumMismatch(.sha1)))
    }

    @Test(arguments: StopReason.allCases)
    func aCutWithoutAChecksumKeepsWhatArrivedThenAnswersTheStop(reason: StopReason) {
        let outcome = AppendOutcome(received: 4, stopReason: reason)
        #expect(AppendDecision.decide(outcome, checksum: .absent) == .commit(then: .stopped(reason)))
    }

    @Test(arguments: StopReason.allCases)
    func aCutWithAChecksumDiscardsEverything(reason: StopReason) {
        let outcome = AppendOutcome(received: 4, stopReason: reason)
        // Even when the bytes that arrived happen to match: the request is all-or-nothing.
        #expect(AppendDecision.decide(outcome, checksum: .matched) == .discard(.stopped(reason)))
        #expect(AppendDecision.decide(outcome, checksum: .mismatched(Self.sha256)) == .discard(.stopped(reason)))
    }

    @Test func aBodyPastTheRoomDiscardsEverythingWhateverElseHappened() {
        let outcome = AppendOutcome(received: 4, overran: true, stopReason: .clientGone)
        #expect(AppendDecision.decide(outcome, checksum: .absent) == .discard(.overran))
        #expect(AppendDecision.decide(outcome, checksum: .matched) == .discard(.overran))
    }

    @Test func aFailedWriteDiscardsEverythingEvenWithoutAChecksum() {
        let full = AppendOutcome(received: 4, overran: true, writeFailure: StorageError.noSpace, stopReason: .superseded)
        #expect(AppendDecision.decide(full, checksum: .absent) == .discard(.writeFailed))
        #expect(AppendDecision.decide(full, checksum: .matched) == .discard(.writeFailed))
        #expect(AppendDecision.decide(AppendOutcome(received: 0, writeFailure: StorageError.noSpace), checksum: .absent)
                == .discard(.writeFailed))
    }

    @Test func eachStopReasonHasItsOwnAnswer() throws {
        let limits = UploadLimits(minReceiveRate: 2048, stallWindow: 30)
        #expect(AppendDecision.error(for: .superseded, limits: limits) as? UploadError == .superseded)
        #expect(AppendDecision.error(for: .tooSlow, limits: limits) as? UploadError
                == .tooSlow(minimumRate: 2048, window: 30))
        #expect(AppendDecision.error(for: .shutdown, limits: limits) as? CaseFilesError == .shuttingDown())
        #expect(AppendDecision.error(for: .clientGone, limits: limits) as? UploadError == .bodyIncomplete)
        #expect(AppendDecision.error(for: .clientGone, limits: limits, bodyError: CancellationError()) as? UploadError
                == .bodyIncomplete)
        // Broken framing stays what it is (a 400 `malformed_body`), not an anonymous early end.
        let framing = StorageError.io(operation: "framing", errno: 1)
        #expect(AppendDecision.error(for: .clientGone, limits: limits, bodyError: framing) as? StorageError == framing)
        // A stop by the server wins over whatever the stream threw when it was cut.
        #expect(AppendDecision.error(for: .superseded, limits: limits, bodyError: framing) as? UploadError == .superseded)
    }

    @Test func shuttingDownIs503WithRetryAfterAndSupersededIs409() {
        let shutdown = APIError(CaseFilesError.shuttingDown())
        #expect(shutdown.status.code == 503)
        #expect(shutdown.code == "shutting_down")
        #expect(shutdown.headers[.retryAfter] == "5")
        let superseded = APIError.translate(UploadError.superseded)
        #expect(superseded.status.code == 409)
        #expect(superseded.code == "superseded")
        #expect(superseded.headers[.retryAfter] == nil)
    }

    @Test func theChecksumVerdictComparesTheDigestOfWhatArrived() {
        var digest = ChunkDigest(.sha256)
        Array("hello".utf8).withUnsafeBytes { digest.update($0) }
        let right = digest.finalize()
        #expect(ChecksumVerdict(expected: nil, computed: nil) == .absent)
        #expect(ChecksumVerdict(expected: (.sha256, right), computed: digest) == .matched)
        #expect(ChecksumVerdict(expected: (.sha256, [UInt8](repeating: 0, count: 32)), computed: digest)
                == .mismatched(.sha256))
    }

    @Test func theRoomIsTheLengthLeftOrTheMaximumForADeferredLength() throws {
        #expect(UploadRoom(length: 100, offset: 30, maxUploadSize: 50) == UploadRoom(bytes: 70, refusal: .bodyExceedsLength(length: 100)))
        #expect(UploadRoom(length: nil, offset: 30, maxUploadSize: 50) == UploadRoom(bytes: 20, refusal: .uploadTooLarge(max: 50)))
        #expect(UploadRoom(length: nil, offset: 30, maxUploadSize: nil) == nil)
        try UploadRoom.check(70, length: 100, offset: 30, maxUploadSize: nil)
        #expect(throws: UploadError.bodyExceedsLength(length: 100)) {
            try UploadRoom.check(71, length: 100, offset: 30, maxUploadSize: nil)
        }
        #expect(throws: UploadError.uploadTooLarge(max: 50)) {
            try UploadRoom.check(21, length: nil, offset: 30, maxUploadSize: 50)
        }
    }
}

/// `UploadWriter`: the lock's newest-wins handover and the watchdog stop the worker and say why.
@Suite struct UploadWriterTests {
    @Test func aNewerWriterSupersedesTheOneInFlight() async throws {
        let locks = UploadWriterLocks()
        let limits = UploadLimits()
        let started = AsyncStream<Void>.makeStream()
        async let first = UploadWriter.run("u1", locks: locks, coordination: SingleNode(), limits: limits, watchesBody: false) { _ in
            started.continuation.yield()
            try await Task.sleep(for: .seconds(30))
            return 1
        }
        for await _ in started.stream { break }
        let second = await UploadWriter.run("u1", locks: locks, coordination: SingleNode(), limits: limits, watchesBody: false) { _ in 2 }
        let stopped = await first
        #expect(try second.result.get() == 2)
        #expect(second.stopReason == nil)
        #expect(stopped.stopReason == .superseded)
        #expect(throws: UploadError.superseded) { try stopped.result.get() }
    }

    @Test func theWatchdogStopsABodyThatBringsTooLittle() async throws {
        let limits = UploadLimits(minReceiveRate: 1000, stallWindow: 0.2)
        let finished = await UploadWriter.run("u2", locks: UploadWriterLocks(), coordination: SingleNode(), limits: limits, watchesBody: true) { writer in
            writer.add(10)  // 10 bytes in 0.2 s: under 1000 bytes/s
            try await Task.sleep(for: .seconds(30))
            return 1
        }
        #expect(finished.stopReason == .tooSlow)
        #expect(throws: UploadError.tooSlow(minimumRate: 1000, window: 0.2)) { try finished.result.get() }
    }

    @Test func aWriterThatFinishesReportsNoStop() async throws {
        let finished = await UploadWriter.run("u3", locks: UploadWriterLocks(), coordination: SingleNode(), limits: UploadLimits(stallWindow: 0.1),
                                              watchesBody: true) { _ in "done" }
        #expect(finished.stopReason == nil)
        #expect(try finished.result.get() == "done")
    }

    /// A batch that would fill the appender's buffer goes to the bulk pool, even a small one: filling it hands the
    /// buffer over, which can wait for the write before it, and must not wait on an event loop.
    @Test func onlyABatchThatLeavesRoomInTheAppendersBufferIsConsumedInline() {
        let small = ChunkSink.offloadThreshold / 2
        #expect(ChunkSink.consumesInline(count: small, stagingRoom: small + 1))
        #expect(!ChunkSink.consumesInline(count: small, stagingRoom: small))
        #expect(!ChunkSink.consumesInline(count: small, stagingRoom: small - 1))
        #expect(!ChunkSink.consumesInline(count: ChunkSink.offloadThreshold, stagingRoom: 8 << 20))
    }
}
