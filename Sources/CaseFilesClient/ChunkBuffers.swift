import NIOConcurrencyHelpers
import NIOCore

/// The upload client's chunk buffers, used again from one chunk to the next instead of allocated per chunk.
///
/// glibc serves a block of 32 MiB or more (the client's largest chunk, `ChunkSizer.maximum`) with a fresh `mmap`
/// and gives it back with `munmap` when freed (its mmap threshold cannot be raised past 32 MiB on 64-bit systems,
/// `ProcessMemory`), so every such chunk was 8,192 new pages, each faulted in and zeroed by the kernel inside
/// the `pread` that filled it. A/B of 2026-11-30, `casefiles upload` of 2 GiB over loopback, five interleaved
/// runs (with `FileWork` in both): 526,062 minor faults, 4.2–5.3 CPU s and 391 MB/s median before; 34,470, 3.4–4.0
/// CPU s and 447 MB/s with these buffers.
///
/// A buffer is reused only once nothing else holds it (`ByteBuffer.modifyIfUniquelyOwned`): the HTTP client
/// lets go of a request's body a little after its answer arrives, and until then the buffer waits in the list.
package final class ChunkBuffers: Sendable {
    private let free = NIOLockedValueBox<[ByteBuffer]>([])
    /// How many buffers wait for reuse at most; past it the oldest is dropped (freed once nothing holds it).
    package let kept: Int

    /// - Parameter kept: buffers kept for reuse: for one upload 3 (the chunk being sent, the next, read
    ///   meanwhile, and the one before, which the HTTP client may still hold); for parallel parts, one more than
    ///   the parts. Memory: at most `kept` + the chunks in flight, each up to `ChunkSizer.maximum` bytes.
    package init(kept: Int) {
        self.kept = max(1, kept)
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
            if free.count > kept { free.removeFirst() }
        }
    }

    /// Buffers waiting to be reused.
    package var available: Int { free.withLockedValue { $0.count } }
}
