import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import CaseFilesCore

/// The whole file's SHA-256 of one request body as a lane of its own: batches queue here, in order, and one
/// thread of BulkWork's secondary pool at a time hashes them, while the request goes on with its next batch.
/// Only `BulkWork.maxFileLanes` run at once (a lone upload's; see there why): `init` returns nil when none is
/// free, and the request then hashes in lockstep (`BulkWork.inParallel`).
///
/// Why (issue #16): the two passes used to meet at the end of every ~1 MiB batch. The secondary pool's thread,
/// woken per batch at nice 10 while curl and the event loops held the cores, started late, and the chunk lane
/// then waited for it: 9–12% of each request (`laneWait` in `--trace-uploads`, 8 and 64 MiB chunk loops). Here a
/// late start only delays the whole-file digest, which nothing needs before the body has ended (`drained`).
///
/// At most `maxQueuedBytes` wait (a bound on what a slow lane holds; `enqueue` waits for room). One producer (the
/// request's task) and one consumer at a time; the digest is touched only by the running drain until `drained`
/// returns, after which the lane is idle. `@unchecked Sendable`: that discipline, and the lock, keep it safe.
package final class FileDigestLane: @unchecked Sendable {
    /// Bytes queued and not yet hashed before `enqueue` waits: two batches. Four measured the same (interleaved
    /// A/B, 4 rounds: 64 MiB loop 766 against 796 MB/s, 8 MiB 645 against 619, the CLI 527 against 505) and held
    /// twice the memory per upload.
    package static let maxQueuedBytes = 2 * ChunkSink.batchSize

    private struct State {
        var queue: [(buffers: [ByteBuffer], bytes: Int)] = []
        var queuedBytes = 0
        /// A drain is submitted or running; only one at a time.
        var running = false
        /// The producer, waiting for room (resumed with false: look again).
        var roomWaiter: CheckedContinuation<Bool, Never>?
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        /// This lane holds one of `BulkWork.maxFileLanes` places: until the first `drained()`, or its deinit.
        var holdsPlace = true
    }

    private let state = NIOLockedValueBox(State())
    private let bulkWork: BulkWork
    /// Owned by the running drain; read by others only after `drained()`.
    private var digest: SHA256Digest
    private var hashTime: UInt64 = 0

    /// - Parameters: digest: the whole file's running SHA-256 so far; bulkWork: whose secondary pool hashes
    ///   (one thread at a time).
    /// - Returns: nil when `bulkWork.maxFileLanes` lanes are running already.
    package init?(digest: SHA256Digest, bulkWork: BulkWork) {
        guard bulkWork.takeFileLane() else { return nil }
        self.digest = digest
        self.bulkWork = bulkWork
    }

    deinit { givePlaceBack() }

    /// The lane's place is given back as soon as the body is hashed: the request's commit and answer do not need it.
    private func givePlaceBack() {
        let held = state.withLockedValue { state in
            defer { state.holdsPlace = false }
            return state.holdsPlace
        }
        if held { bulkWork.returnFileLane() }
    }

    /// Queues `buffers` (`bytes` readable bytes in all) to be hashed after everything queued before; waits while
    /// more than `maxQueuedBytes` are queued. The buffers are kept, not copied (reference-counted).
    package func enqueue(_ buffers: [ByteBuffer], bytes: Int) async {
        while true {
            let queued = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let (queued, start) = state.withLockedValue { state -> (Bool, Bool) in
                    if state.queuedBytes > 0 && state.queuedBytes + bytes > Self.maxQueuedBytes {
                        state.roomWaiter = continuation  // one producer: at most one waits
                        return (false, false)
                    }
                    state.queue.append((buffers, bytes))
                    state.queuedBytes += bytes
                    defer { state.running = true }
                    return (true, !state.running)
                }
                if start { submitDrain() }
                if queued { continuation.resume(returning: true) }
            }
            if queued { return }
        }
    }

    /// Waits until everything queued is hashed, and gives the lane's place back (nothing more may be queued).
    /// - Returns: the whole file's SHA-256 state after the last queued byte, and the nanoseconds spent hashing.
    package func drained() async -> (digest: SHA256Digest, hashTime: UInt64) {
        await withCheckedContinuation { continuation in
            let idle = state.withLockedValue { state -> Bool in
                if !state.running { return true }
                state.drainWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
        givePlaceBack()
        return (digest, hashTime)
    }

    private func submitDrain() {
        bulkWork.submitSecondary { self.drain() }
    }

    private func drain() {
        while true {
            // Taking the last batch and going idle happen under one lock, with the drain waiters: a batch queued
            // after that starts a new drain, and a waiter that came meanwhile waits for it.
            let next = state.withLockedValue { state -> Next in
                guard !state.queue.isEmpty else {
                    state.running = false
                    defer { state.drainWaiters = [] }
                    return .idle(state.drainWaiters)
                }
                let (buffers, bytes) = state.queue.removeFirst()
                return .batch(buffers, bytes)
            }
            switch next {
            case .idle(let waiters):
                for waiter in waiters { waiter.resume() }
                return
            case .batch(let buffers, let bytes):
                let started = MonotonicClock.nanoseconds()
                for buffer in buffers { digest.update(buffer) }
                hashTime += MonotonicClock.since(started)
                let producer = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
                    state.queuedBytes -= bytes
                    defer { state.roomWaiter = nil }
                    return state.roomWaiter
                }
                producer?.resume(returning: false)
            }
        }
    }

    private enum Next {
        case batch([ByteBuffer], Int)
        case idle([CheckedContinuation<Void, Never>])
    }
}
