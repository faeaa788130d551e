import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import CaseFilesCore
import CaseFilesStorage

/// Threads for the bulk work of uploads: the chunk's digest and the write on one pool, the whole file's
/// SHA-256 on the other (in lockstep, `inParallel`, or queued, `FileDigestLane`), so the two passes over the
/// same bytes run on two cores at once. Their threads run at a lower priority (`ThreadPriority.bulkWork`,
/// nice 10): when the CPUs are busy, routing a request (a HEAD probe, a listing) goes first and bulk hashing
/// takes what is left, which on an idle machine is everything.
/// Owned by the application (`AppServices.bulkWork`), not a static singleton; it lives as long as its owner.
public final class BulkWork: Sendable {
    package let primary: NIOThreadPool
    package let secondary: NIOThreadPool
    /// Queued whole-file lanes (`FileDigestLane`) that may run at once, and how many do.
    package let maxFileLanes: Int
    private let fileLanesInUse = NIOLockedValueBox(0)

    /// How many uploads at a time hash their whole file in a queued lane (`FileDigestLane`) rather than in
    /// lockstep with the chunk's digest. One (issue #16): a lone upload's lane lets its two passes stop waiting
    /// for each other at every batch (the 8 and 64 MiB chunk loops on a fast disk +10% and +7%, interleaved A/B);
    /// with many uploads the cores are busy anyway, and a lane for each took the idle that other requests were
    /// served in (HEAD p99 under 32 uploads 1.4–2.3x an idle server's, against 1.0–1.5x in lockstep; with one
    /// lane 1.16x / 1.26x). BENCHMARKS.md, 2026-11-30.
    public static let defaultMaxFileLanes = 1

    /// - Parameters: threadsPerPool: threads in each pool (default: the core count, at least 2);
    ///   maxFileLanes: see `defaultMaxFileLanes` (0: always lockstep).
    public init(threadsPerPool: Int = max(2, System.coreCount), maxFileLanes: Int = BulkWork.defaultMaxFileLanes) {
        primary = NIOThreadPool(numberOfThreads: threadsPerPool)
        secondary = NIOThreadPool(numberOfThreads: threadsPerPool)
        self.maxFileLanes = maxFileLanes
        primary.start()
        secondary.start()
    }

    /// Takes one of the `maxFileLanes` places, if one is free. Give it back with `returnFileLane` (once).
    package func takeFileLane() -> Bool {
        fileLanesInUse.withLockedValue { inUse in
            guard inUse < maxFileLanes else { return false }
            inUse += 1
            return true
        }
    }

    package func returnFileLane() {
        fileLanesInUse.withLockedValue { $0 -= 1 }
    }

    /// Submits `work` to the secondary pool at the bulk priority and returns at once (a `FileDigestLane`'s
    /// drain). `work` must not block on anything but the CPU, so the pool cannot deadlock.
    package func submitSecondary(_ work: @escaping @Sendable () -> Void) {
        secondary.submit { _ in
            Self.lowerPriority()
            work()
        }
    }

    public func shutdown() async throws {
        try await primary.shutdownGracefully()
        try await secondary.shutdownGracefully()
    }

    /// Called at the start of every work item: cheap, and it keeps the priority on whichever thread runs it.
    package static func lowerPriority() { ThreadPriority.setCurrentThread(nice: ThreadPriority.bulkWork) }

    /// Runs `work` on the primary pool, to completion: bytes taken from a request body reach the disk and the
    /// digests (the whole file's may be queued in a `FileDigestLane` instead) together, whatever happens to the
    /// request meanwhile.
    package func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await primary.runToCompletion {
            Self.lowerPriority()
            return try work()
        }
    }

    /// Runs `first` here and `second` on the secondary pool, and returns when both are done. The caller
    /// guarantees the two touch disjoint state, which is why the sendability check is waived here and
    /// nowhere else. `second` never waits on anything, so the secondary pool cannot deadlock.
    package func inParallel(_ first: () -> Void, _ second: () -> Void) {
        withoutActuallyEscaping(second) { second in
            // The pool may keep its work item alive a moment after it ran, so the work item holds a
            // box, and the closure leaves the box before `withoutActuallyEscaping` checks it did not escape.
            let lane = Lane(run: second)
            let done = DispatchSemaphore(value: 0)
            secondary.submit { _ in
                Self.lowerPriority()
                lane.run?()
                done.signal()
            }
            first()
            done.wait()
            lane.run = nil
        }
    }
}

private final class Lane: @unchecked Sendable {
    var run: (() -> Void)?
    init(run: @escaping () -> Void) { self.run = run }
}
