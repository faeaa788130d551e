import Foundation
import NIOCore

/// The appenders' staging buffers (`FileBlobAppender.buffersPerAppender` per open appender, `size` bytes each, page-aligned
/// for O_DIRECT), kept for the next request instead of freed: at most `retained` of them once returned.
///
/// Why (issue #16): an appender per request allocated 2 MiB and freed it at the end. From the heap, glibc gave
/// the freed top back to the kernel and the next request touched fresh pages again (glibc's defaults: ~100
/// minor faults per MiB in the 8 MiB chunk loop, each tens of microseconds on a VM that returns free memory
/// to its host); kept in the heap for reuse (`ProcessMemory`), the aligned blocks left holes that raised the
/// chunk loops' peak RSS by ~30 MiB. Mapped here on their own (`mmap`), they never fragment the heap, and
/// reused, they are touched fresh once. What this holds idle is bounded: `retained` × `size`.
/// Thread-safe; owned by the store that hands them out (`FileBlobStore`), not a static singleton.
public final class StagingBuffers: @unchecked Sendable {
    /// Bytes in each buffer.
    public let size: Int
    /// Buffers kept when returned; any more are unmapped.
    public let retained: Int
    private let lock = NSLock()
    private var free: [UnsafeMutableRawBufferPointer] = []
    private var mapped = 0

    /// - Parameters: size: bytes per buffer, a multiple of the page size; retained: buffers kept for reuse
    ///   (default: two appenders' worth per core, counting at least 2 cores: 8 on two cores).
    public init(size: Int, retained: Int = 2 * max(2, System.coreCount) * FileBlobAppender.buffersPerAppender) {
        precondition(size > 0 && size % Int(sysconf(Int32(_SC_PAGESIZE))) == 0, "staging size must be whole pages")
        self.size = size
        self.retained = retained
    }

    deinit {
        for buffer in free { munmap(buffer.baseAddress, size) }
    }

    /// A kept buffer, or a newly mapped one.
    /// - Throws: `StorageError` when the kernel refuses the mapping (out of memory).
    package func take() throws -> UnsafeMutableRawBufferPointer {
        if let kept = lock.withLock({ free.popLast() }) { return kept }
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else { throw StorageError.from("mmap", errno: errno) }
        lock.withLock { mapped += 1 }
        return UnsafeMutableRawBufferPointer(start: address, count: size)
    }

    /// Gives back a buffer from `take()`. Its contents are not cleared: an appender writes to its blob only
    /// bytes it staged itself (the committed head it read back, then the request's), never the rest.
    package func give(_ buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count == size, "not one of this pool's buffers")
        let kept = lock.withLock { () -> Bool in
            // Given twice, one buffer would go to two appenders and mix two uploads' bytes: stop instead.
            precondition(!free.contains { $0.baseAddress == buffer.baseAddress }, "a staging buffer given back twice")
            guard free.count < retained else {
                mapped -= 1
                return false
            }
            free.append(buffer)
            return true
        }
        if !kept { munmap(buffer.baseAddress, size) }
    }

    /// Buffers held for reuse now.
    public var idleCount: Int { lock.withLock { free.count } }
    /// Buffers mapped now: handed out plus idle.
    public var mappedCount: Int { lock.withLock { mapped } }
}
