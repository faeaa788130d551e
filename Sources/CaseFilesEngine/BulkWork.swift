import Dispatch
import NIOCore
import NIOPosix
import CaseFilesCore
import CaseFilesStorage

/// Threads for the bulk work of uploads: the chunk's digest and the write on one pool, the whole file's
/// SHA-256 on the other, so the two passes over the same bytes run on two cores at once. Their threads
/// run at a lower priority (`ThreadPriority.bulkWork`, nice 10): when the CPUs are busy, routing a request (a
/// HEAD probe, a listing) goes first and bulk hashing takes what is left, which on an idle machine is everything.
/// Owned by the application (`AppServices.bulkWork`), not a static singleton; it lives as long as its owner.
public final class BulkWork: Sendable {
    package let primary: NIOThreadPool
    package let secondary: NIOThreadPool

    /// - Parameter threadsPerPool: threads in each pool (default: the core count, at least 2).
    public init(threadsPerPool: Int = max(2, System.coreCount)) {
        primary = NIOThreadPool(numberOfThreads: threadsPerPool)
        secondary = NIOThreadPool(numberOfThreads: threadsPerPool)
        primary.start()
        secondary.start()
    }

    public func shutdown() async throws {
        try await primary.shutdownGracefully()
        try await secondary.shutdownGracefully()
    }

    /// Called at the start of every work item: cheap, and it keeps the priority on whichever thread runs it.
    package static func lowerPriority() { ThreadPriority.setCurrentThread(nice: ThreadPriority.bulkWork) }

    /// Runs `work` on the primary pool, to completion: bytes taken from a request body reach the disk
    /// and both digests together, whatever happens to the request meanwhile.
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
