import Foundation
import CLinuxIO

/// How the process's allocator treats memory it frees: kept for reuse, not handed back to the kernel at once.
///
/// Why (issue #16, measured with `Scripts/bench` and `--trace-uploads`): with glibc's defaults, blocks of
/// 128 KiB and more (the appender's 1 MiB staging buffers, request-body batches) are fresh `mmap`s, and free
/// memory at the top of a heap goes back to the kernel past 128 KiB; the next request then touches fresh pages
/// again. The server took 199 minor page faults per MiB uploaded in the 8 MiB chunk loop (0.78 of every
/// 4 KiB page of the data), 48 at 64 MiB and 24 in one large PATCH. Each fault costs a microsecond here, and
/// on a virtual machine whose free memory goes back to the host (a fresh machine of this kind) tens of them:
/// the 90 ms per 64 MiB chunk the issue saw. Kept, they fell to 14, 0.6 and 0.0 per MiB, and the 8 MiB loop
/// went from 357 to 466 MB/s in one run. The cost: memory freed after a burst stays mapped (counted in RSS)
/// up to the trim threshold, and is reused by the next burst.
///
/// Heap blocks this large kept in glibc's default 8 arenas per core (16 here) raised the chunk loops' peak RSS from
/// 64 to 122–133 MiB; with one arena per core it was 92–94 MiB at the same or better throughput (A/B of one release
/// build through `GLIBC_TUNABLES`, 16:00 2026-11-29: 8 MiB loop 612–644 against 522–591 MB/s, 64 MiB 662–717
/// against 607–695). A lower trim threshold did not lower the peak (64 MiB: 117–135 MiB): the peak is the
/// working set spread over arenas, not memory waiting to be trimmed. What spread it was the appenders' aligned
/// 1 MiB staging buffers: they are now mapped outside the heap and reused (`StagingBuffers`), and the chunk
/// loops' peak is back to 63 MiB with 2.4 faults per MiB at 8 MiB (A/B of release builds, 2026-11-29 22:25).
/// With them gone from the heap, one arena per two cores (one here) is enough: the large blocks left are few (one
/// per socket read of up to 512 KiB), so the arena's lock is seldom taken, and small ones come from each thread's
/// cache. On 2 cores one arena against two: peak 60.3-61.4 against 65.9-67.2 MiB (the 8 MiB loop, a
/// `casefiles upload`, then the 64 MiB loop, 1 GiB each), 8 MiB loop 509/545/685 against 491/550/642 MB/s, 64 MiB
/// 643/607/754 against 632/704/766, three interleaved runs, 2026-11-29 ~23:00 (`GLIBC_TUNABLES`). Larger machines
/// keep half their cores in arenas; not measured here.
public enum ProcessMemory {
    /// Blocks up to this size come from the heap (glibc's largest allowed value on 64-bit systems).
    public static let mmapThreshold = 32 << 20
    /// Free memory at the top of a heap goes back to the kernel only past this much.
    public static let trimThreshold = 256 << 20
    /// Heaps the allocator keeps: one per two cores, at least one (glibc's default is 8 per core).
    public static var arenaMax: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    /// Applies the policy; call once, first thing in `main`, before threads start allocating.
    ///
    /// An operator's own allocator tuning wins: with any `glibc.malloc.*` tunable in `GLIBC_TUNABLES`
    /// (glibc manual, "Memory Allocation Tunables") nothing is changed, so a memory-tight host can set
    /// e.g. `glibc.malloc.trim_threshold` without a rebuild.
    /// - Returns: false where the allocator is not glibc's, refused the values, or the operator tuned it.
    @discardableResult
    public static func keepFreedMemory(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if environment["GLIBC_TUNABLES"]?.contains("glibc.malloc.") == true { return false }
        return casefiles_keep_freed_memory(UInt(mmapThreshold), UInt(trimThreshold), Int32(arenaMax)) == 1
    }

    /// Minor page faults of the process so far (`getrusage`), or nil where unknown.
    public static func minorFaults() -> Int? {
        let faults = casefiles_minor_faults()
        return faults >= 0 ? faults : nil
    }
}
