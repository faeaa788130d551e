import NIOPosix

/// Where the upload client reads its file and computes SHA-256s: NIO's shared blocking pool
/// (`NIOThreadPool.singleton`, one thread per core), not Swift's cooperative threads.
///
/// The cooperative pool also has one thread per core, and synchronous work holds its thread until it is done (a
/// 32 MiB chunk: ~20 ms to read and hash, and as long again for the whole-file digest). `TusUploader` runs both
/// while a chunk is on its way, so on two cores they took every thread the request's own continuations needed.
/// A/B of 2026-11-30, `casefiles upload` of 2 GiB over loopback, both builds with `ChunkBuffers`, five
/// interleaved runs: 447 MB/s median here, 418 MB/s with the reads in a task of their own and the whole-file
/// digest inline, both on the cooperative threads, as before (ad hoc driver; the committed measure is
/// `Scripts/bench`'s "casefiles upload" row).
package enum FileWork {
    /// Runs `work` (file reads, hashing, compression: synchronous, CPU- or disk-bound) on the blocking pool.
    /// - Throws: what `work` throws; `NIOThreadPoolError.ThreadPoolInactive` if the pool was shut down.
    package static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}
