import NIOCore
import NIOPosix

/// The threads storage waits on the disk with, owned by whoever opens the storage (`AppServices.open`, tests)
/// rather than static singletons: `blocking` runs the calls that can wait (create with its fsyncs, truncate,
/// unlink, open, statvfs, fdatasync, download reads) off the threads that run handlers; `writers` writes full
/// staging buffers while the hashing goes on. They live as long as their owner (for `serve`, the process).
public final class StorageThreads: Sendable {
    public let blocking: NIOThreadPool
    public let writers: NIOThreadPool

    /// - Parameter threadsPerPool: threads in each pool (default: the core count, at least 2).
    public init(threadsPerPool: Int = max(2, System.coreCount)) {
        blocking = NIOThreadPool(numberOfThreads: threadsPerPool)
        writers = NIOThreadPool(numberOfThreads: threadsPerPool)
        blocking.start()
        writers.start()
    }

    /// Runs `work` on the blocking pool, to completion: a discard or a removal that was asked for always
    /// happens, whatever becomes of the task that asked.
    public func blockingIO<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await blocking.runToCompletion(work)
    }

    public func shutdown() async throws {
        try await blocking.shutdownGracefully()
        try await writers.shutdownGracefully()
    }
}
