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
public enum ProcessMemory {
    /// Blocks up to this size come from the heap (glibc's largest allowed value on 64-bit systems).
    public static let mmapThreshold = 32 << 20
    /// Free memory at the top of a heap goes back to the kernel only past this much.
    public static let trimThreshold = 256 << 20

    /// Applies the policy; call once, first thing in `main`, before threads start allocating.
    /// - Returns: false where the allocator is not glibc's or refused the values (nothing changes then).
    @discardableResult
    public static func keepFreedMemory() -> Bool {
        casefiles_keep_freed_memory(UInt(mmapThreshold), UInt(trimThreshold)) == 1
    }

    /// Minor page faults of the process so far (`getrusage`), or nil where unknown.
    public static func minorFaults() -> Int? {
        let faults = casefiles_minor_faults()
        return faults >= 0 ? faults : nil
    }
}
