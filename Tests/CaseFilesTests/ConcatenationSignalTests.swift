import Foundation
import Testing
@testable import CaseFilesEngine

/// The verifier's wake-up: a wait lasts until a wake or its timeout, every time (it used an AsyncStream, which
/// after the first timed-out wait returned at once forever: the verifier spun on its query, a core busy).
@Suite struct ConcatenationSignalTests {
    @Test func everyWaitWaitsForItsTimeoutWithoutAWake() async {
        let signal = ConcatenationSignal()
        let started = ContinuousClock.now
        for _ in 0..<3 { await signal.wait(upTo: .milliseconds(100)) }
        // A lower bound only: three waits of 100 ms cannot end sooner, however slow the machine.
        #expect(ContinuousClock.now - started >= .milliseconds(300))
    }

    @Test func aWakeEndsAWaitAndOneWithNobodyWaitingEndsTheNext() async {
        let signal = ConcatenationSignal()
        signal.wake()  // nobody waits yet: kept for the next wait
        await signal.wait(upTo: .seconds(600))
        async let waited: Void = signal.wait(upTo: .seconds(600))
        try? await Task.sleep(for: .milliseconds(50))
        signal.wake()
        await waited  // returns: a 600 s timeout would fail the suite's time limit instead
        let started = ContinuousClock.now
        await signal.wait(upTo: .milliseconds(100))  // no wake left over
        #expect(ContinuousClock.now - started >= .milliseconds(100))
    }

    @Test func aCancelledWaitEndsAtOnce() async {
        let signal = ConcatenationSignal()
        let waiting = Task { await signal.wait(upTo: .seconds(600)) }
        try? await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await waiting.value  // returns: a waiter left registered would hang here (and the service at shutdown)
    }
}
