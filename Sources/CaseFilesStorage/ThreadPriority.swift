import CLinuxIO
import Foundation
import NIOCore

/// Which of the process's threads goes first when the cores are busy: every nice value the service sets, in
/// one place (on Linux a nice value belongs to a thread, not to the process).
///
/// - The event loops (accepting, reading sockets, routing requests, running handlers) at `eventLoopDefault`,
///   nice -10 (`--event-loop-nice`; nginx's `worker_priority` does the same for its workers). Why (issue #16,
///   BENCHMARKS.md 2026-11-30): with 32 uploads on 2 cores the machine is 96-97% busy, the loops share the cores
///   with the clients and the hashing, and a HEAD waits for a core, not for our code: in the same A/B the busy
///   server's p99 fell from 7.3 to 5.5 ms, a new connection's first answer from 55 to 17 ms, at the same MB/s.
///   Lowering a nice value needs CAP_SYS_NICE (the packaged systemd unit grants it) or room under RLIMIT_NICE;
///   without either, `serve` says so once and the loops stay at the process's nice.
/// - The bulk work (`bulkWork`, nice 10): hashing, staging copies and archive indexing take what is left.
/// Everything else (storage's blocking and writer pools, the database's threads) keeps the process's nice.
public enum ThreadPriority {
    /// The event loops' nice value unless `--event-loop-nice` says otherwise.
    public static let eventLoopDefault = -10
    /// The nice values `--event-loop-nice` accepts: raising the loops' priority, or leaving it (0).
    public static let eventLoopRange = -20...0
    /// The bulk-work threads' nice value (`BulkWork`, the bundle indexer).
    public static let bulkWork = 10

    /// Sets the calling thread's nice value.
    /// - Returns: nil when set, else the errno (EACCES: below the current value without CAP_SYS_NICE or
    ///   RLIMIT_NICE; ENOSYS: not Linux).
    @discardableResult
    public static func setCurrentThread(nice: Int) -> Int32? {
        let error = casefiles_set_thread_nice(Int32(nice))
        return error == 0 ? nil : error
    }

    /// The calling thread's nice value (0 elsewhere than Linux).
    public static func currentThreadNice() -> Int {
        Int(casefiles_thread_nice())
    }

    /// Sets every event loop of `group` (each on its own thread) to `nice`; a loop's threads started later
    /// inherit it. Call before the server listens.
    /// - Returns: nil when every loop took it, else the first refusal's errno (the loops keep their value).
    public static func setEventLoops(of group: any EventLoopGroup, nice: Int) async -> Int32? {
        var refusal: Int32?
        for loop in group.makeIterator() {
            let outcome: Int32?
            do { outcome = try await loop.submit { setCurrentThread(nice: nice) }.get() } catch { outcome = ESRCH }
            if refusal == nil { refusal = outcome }
        }
        return refusal
    }
}
