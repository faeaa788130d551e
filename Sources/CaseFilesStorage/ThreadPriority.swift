import CLinuxIO
import Foundation
import NIOCore

/// Which of the process's threads goes first when the cores are busy: every nice value the service sets, in
/// one place (on Linux a nice value belongs to a thread, not to the process).
///
/// - The event loops (accepting, reading sockets, routing requests, running handlers, and every Swift task:
///   `serve` makes them the global executor) at `eventLoopDefault`, nice -10 (`--event-loop-nice`; nginx's
///   `worker_priority` can do the same for its workers). Why (issue #16, BENCHMARKS.md 2026-11-30): with 32
///   uploads on 2 cores the machine is 96-99% busy, the loops share the cores with the clients and the hashing,
///   and a HEAD waits for a core, not for our code: in an interleaved A/B (10 rounds each) the busy server's p99
///   fell from 6.8 to 5.4 ms and a new connection's first answer from 54 to 19 ms (614 against 628 MB/s, within
///   the rounds' spread). The cost: on a saturated host the loops also go ahead of other processes at nice 0 (a
///   PostgreSQL or a proxy beside it; nginx probed under the same load: 2.1 -> 2.8 ms).
///   Lowering a nice value needs room under RLIMIT_NICE (the packaged systemd unit sets `LimitNICE=-10`) or
///   CAP_SYS_NICE; without either, `serve` says so once and the loops stay at the process's nice.
/// - The bulk work (`bulkWork`, nice 10): hashing, staging copies and archive indexing take what is left; the
///   threads set it themselves on every work item, so none keeps a loop's value it inherited.
/// Everything else keeps the value it started with: storage's pools the process's (they start before the loops
/// are raised), Dispatch's workers (GRDB's queues) what Dispatch gives their quality of service.
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

    /// Sets every event loop of `group` (each on its own thread) to `nice`; threads a loop starts later inherit
    /// it. Call before the server listens.
    /// - Returns: nil when every loop took it, else the first refusal's errno (EACCES as above; ESRCH: a loop
    ///   that has shut down). The loops share the process's credentials and limits, so all take it or none does.
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
