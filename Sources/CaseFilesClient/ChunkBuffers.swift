import NIOConcurrencyHelpers
import NIOCore

/// The upload client's chunk buffers, used again from one chunk to the next instead of allocated per chunk.
///
/// glibc serves a block of 32 MiB or more (the client's largest chunk, `ChunkSizer.maximum`) with a fresh `mmap`
/// and gives it back with `munmap` when freed (`ProcessMemory` sets its mmap threshold to 32 MiB, the most glibc
/// allows on 64-bit systems), so every such chunk was 8,192 new pages, each faulted in and zeroed by the kernel
/// inside the `pread` that filled it. A/B of 2026-11-30, `casefiles upload` of 2 GiB over loopback, five
/// interleaved runs each: before, 526,062 minor faults, 4.2–5.3 CPU s and 391 MB/s median; these buffers alone,
/// 26,266, 3.3–3.6 CPU s and 418 MB/s; with `FileWork` too, 34,461–34,496, 3.4–4.0 CPU s and 447 MB/s.
///
/// A buffer is reused only once nothing else holds it (`ByteBuffer.modifyIfUniquelyOwned`): the HTTP client
/// lets go of a request's body a little after its answer arrives, and until then the buffer waits in the list.
package final class ChunkBuffers: Sendable {
    private let free = NIOLockedValueBox<[ByteBuffer]>([])
    /// How many buffers wait for reuse at most; past it the oldest is dropped (freed once nothing holds it).
    /// Memory: the chunks in use plus at most `retained` more, each up to `ChunkSizer.maximum` bytes.
    package let retained: Int

    /// - Parameter retained: 2 for an upload: the buffer just handed back, which the HTTP client may still hold
    ///   for a moment, and the one before it, which it has let go by the time the next chunk is read.
    package init(retained: Int) {
        self.retained = max(1, retained)
    }

    /// An empty buffer: a free one that nothing else still holds, if any (its capacity may be smaller than
    /// `capacity`; writing grows it), else a new one of `capacity` bytes.
    package func take(capacity: Int) -> ByteBuffer {
        let reused = free.withLockedValue { free -> ByteBuffer? in
            // Oldest first: the longer ago a buffer came back, the likelier its last other holder is gone.
            for index in free.indices {
                if free[index].modifyIfUniquelyOwned({ $0.clear() }) != nil {
                    return free.remove(at: index)
                }
            }
            return nil
        }
        if let reused { return reused }
        return ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Hands `buffer` back once its chunk is done (sent, answered and hashed): it must not be written through
    /// any other copy afterwards (reading one is harmless: the buffer is reused only when no other copy is left).
    package func give(_ buffer: ByteBuffer) {
        free.withLockedValue { free in
            free.append(buffer)
            if free.count > retained { free.removeFirst() }
        }
    }

    /// Buffers waiting to be reused.
    package var idleCount: Int { free.withLockedValue { $0.count } }
}
