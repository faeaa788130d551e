import CLinuxIO
import Foundation
import NIOCore
import NIOPosix
import CaseFilesCore

/// Blobs as plain files under `<root>/blobs/<first two id characters>/<id>`: folders 0700 and files 0600
/// (`PrivateStorage`), whatever the process umask.
public struct FileBlobStore: BlobStore {
    package static let folderName = "blobs"
    public let root: URL
    public let threads: StorageThreads
    /// The appenders' staging buffers, reused from one request to the next.
    public let staging = StagingBuffers(size: FileBlobAppender.stagingSize)

    /// - Parameters:
    ///   - root: the storage root; it (its parent must exist) and `blobs/` in it are created if missing.
    ///   - threads: the threads its blocking calls and background writes run on.
    public init(root: URL, threads: StorageThreads) throws {
        self.threads = threads
        self.root = root.appendingPathComponent(Self.folderName, isDirectory: true)
        try PrivateStorage.makeDirectory(root.path)
        try PrivateStorage.makeDirectory(self.root.path)
    }

    package func path(for id: String) -> String {
        // Ids are generated here as hex; refuse anything else so no id can name a path outside the root.
        precondition(SecureRandom.isIdentifier(id), "invalid blob id")
        return root.appendingPathComponent(String(id.prefix(2))).appendingPathComponent(id).path
    }

    // The blocking calls, for callers already on a blocking thread (tests, backup); the protocol's async
    // calls below run them on `threads.blocking`, off the threads that run handlers: an fsync waits for the
    // journal, and freeing a large file's extents (unlink, ftruncate) took 1.2 s for 4 GiB here.

    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    public func create(id: String) throws {
        let path = path(for: id)
        let directory = (path as NSString).deletingLastPathComponent
        try PrivateStorage.makeDirectory(directory)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, PrivateStorage.fileMode)
        guard fd >= 0 else { throw StorageError.from("create", errno: errno) }
        defer { close(fd) }
        // Make the new directory entry durable too, so a committed upload never lacks its file.
        guard fsync(fd) == 0 else { throw StorageError.from("fsync", errno: errno) }
        try Self.syncDirectory(directory)
    }

    /// Opens the file at `offset` after truncating it there (bytes past it are garbage).
    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    public func openFileForAppend(id: String, at offset: Int64) throws -> FileBlobAppender {
        // Read-write: the appender reads back the committed part of the block it starts in.
        let fd = open(path(for: id), O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? StorageError.missingBlob(id) : StorageError.from("open", errno: errno)
        }
        guard ftruncate(fd, off_t(offset)) == 0 else {
            let code = errno
            close(fd)
            throw StorageError.from("ftruncate", errno: code)
        }
        return try FileBlobAppender(fd: fd, directFD: casefiles_open_direct(path(for: id)), start: offset, threads: threads,
                                    buffers: staging)
    }

    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    public func openFileForReading(id: String) throws -> FileBlobReader {
        let fd = open(path(for: id), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? StorageError.missingBlob(id) : StorageError.from("open", errno: errno)
        }
        return FileBlobReader(fd: fd, threads: threads)
    }

    @available(*, noasync, message: "it can wait on the disk: use the async overload")
    public func remove(id: String) throws {
        if unlink(path(for: id)) != 0 && errno != ENOENT {
            throw StorageError.from("unlink", errno: errno)
        }
    }

    @available(*, noasync, message: "it lists directories: use storedBlobs()")
    public func storedFiles() throws -> [StoredBlob] {
        let fm = FileManager.default
        // Only names this store could have made; anything else dropped here is left alone.
        let ids = try fm.contentsOfDirectory(atPath: root.path).flatMap { shard in
            (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(shard).path)) ?? []
        }.filter(SecureRandom.isIdentifier)
        return ids.compactMap { id in
            // Gone since the listing (removed meanwhile): nothing to sweep.
            guard let modified = try? fm.attributesOfItem(atPath: path(for: id))[.modificationDate] as? Date else { return nil }
            return StoredBlob(id: id, lastModified: modified)
        }
    }

    /// `statvfs` of the storage file system: bytes available to this user.
    @available(*, noasync, message: "statvfs can wait on a busy filesystem: use the async overload")
    public func availableFileSystemBytes() throws -> Int64 {
        var stats = statvfs()
        guard statvfs(root.path, &stats) == 0 else { throw StorageError.from("statvfs", errno: errno) }
        return Int64(stats.f_bavail) * Int64(stats.f_frsize)
    }

    // MARK: BlobStore

    public func create(id: String) async throws {
        try await threads.blockingIO { try self.create(id: id) }
    }

    public func openForAppend(id: String, at offset: Int64) async throws -> any BlobAppender {
        try await threads.blockingIO { try self.openFileForAppend(id: id, at: offset) }
    }

    /// Nothing to do: every committed byte is already in the file, fsynced by the appender.
    @discardableResult
    public func complete(id: String, length: Int64) async throws -> String? { nil }

    /// `open` can wait on a cold directory lookup.
    public func openForReading(id: String) async throws -> any BlobReader {
        try await threads.blockingIO { try self.openFileForReading(id: id) }
    }

    public func remove(id: String) async throws {
        try await threads.blockingIO { try self.remove(id: id) }
    }

    public func storedBlobs() async throws -> [StoredBlob] {
        try await threads.blockingIO { try self.storedFiles() }
    }

    public func availableBytes() async throws -> Int64? {
        try await threads.blockingIO { try self.availableFileSystemBytes() }
    }

    package static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError.from("open directory", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StorageError.from("fsync directory", errno: errno) }
    }
}

/// Appends one request's bytes to a blob. Owned by exactly one request at a time (the upload's
/// writer lock guarantees it), hence `@unchecked Sendable`.
///
/// Bytes are gathered in an aligned 1 MiB staging buffer and written with O_DIRECT, from that buffer to
/// the device. Through the page cache every written page was a fresh one, and on a VM whose free memory
/// goes back to the host a fresh page costs several times the copy: buffered writes ran at 270 MB/s and
/// 3.5 CPU s/GiB where O_DIRECT ran at 1.4 GB/s and 0.15 (dd, 1 MiB blocks). Only the unaligned tail of
/// a request goes through the page cache; where O_DIRECT is refused (tmpfs) everything does.
/// Buffers take turns (`buffersPerAppender`): one fills while the others are written, so the device writes
/// (about a millisecond per MiB) overlap the hashing instead of stalling it.
public final class FileBlobAppender: BlobAppender, @unchecked Sendable {
    private let fd: Int32
    /// O_DIRECT where the file system allows it, else `fd`.
    private let directFD: Int32
    /// The committed length the appender started from.
    public let start: Int64
    /// Where the next byte goes.
    public private(set) var position: Int64
    /// Bytes from here (block-aligned) to `position` are in `staging`, not yet written.
    private var stagedFrom: Int64
    private var staging: UnsafeMutableRawBufferPointer
    /// Full buffers handed to the writer threads, oldest first, each with its write to wait for before the
    /// buffer is refilled or its bytes are called durable.
    private var inFlight: [(buffer: UnsafeMutableRawBufferPointer, write: InFlightWrite)] = []
    /// Buffers whose write has finished, ready to fill.
    private var spare: [UnsafeMutableRawBufferPointer]
    private let threads: StorageThreads
    /// Where `staging`, `spare` and the buffers in flight come from and go back to.
    private let buffers: StagingBuffers
    /// Where this appender's time went (`--trace-uploads`); a few clock reads per MiB, always on.
    public private(set) var timings = BlobIOTimings()

    /// Direct I/O needs buffer addresses, offsets and lengths aligned to the device's block size.
    package static let block = 4096
    package static let stagingSize = 1 << 20
    /// Staging buffers each appender holds: one filling, the others being written (at least 2). Three (two
    /// writes in flight) cut the hashing lane's wait for the device from 0.72-0.94 to 0.47-0.57 ms per 8 MiB
    /// request (unthrottled, `writerWait` in `--trace-uploads`), but the chunk loops' rates stayed within their
    /// noise and each upload held 1 MiB more (the 64 MiB loop's peak RSS 64.6 MiB, over the round's 64.3): two.
    public static let buffersPerAppender = 2

    /// Takes ownership of `fd` and `directFD` (closed at deinit, also when this throws).
    /// - Throws: `StorageError` when no staging buffer can be mapped or the committed head cannot be read.
    package init(fd: Int32, directFD: Int32, start: Int64, threads: StorageThreads, buffers: StagingBuffers) throws {
        precondition(buffers.size == Self.stagingSize, "staging buffers of another size")
        precondition(Self.buffersPerAppender >= 2, "one buffer fills while the others are written")
        var taken: [UnsafeMutableRawBufferPointer] = []
        do {
            for _ in 0..<Self.buffersPerAppender { taken.append(try buffers.take()) }
        } catch {
            for buffer in taken { buffers.give(buffer) }
            if directFD >= 0 && directFD != fd { close(directFD) }
            close(fd)
            throw error
        }
        self.threads = threads
        self.buffers = buffers
        self.fd = fd
        self.directFD = directFD >= 0 ? directFD : fd
        self.start = start
        self.position = start
        self.stagedFrom = start
        self.staging = taken.removeLast()
        self.spare = taken
        try stageCommittedHead()
    }

    deinit {
        _ = try? finishInFlightWrites()  // already done: each write holds the appender until it finishes
        if directFD != fd { close(directFD) }
        close(fd)
        buffers.give(staging)
        for buffer in spare { buffers.give(buffer) }
    }

    /// Room left before the next write to disk.
    public var stagingRoom: Int { Self.stagingSize - Int(position - stagedFrom) }

    /// Copies into the staging buffer and hands it to a writer thread each time it fills. Called on a
    /// bulk-work thread: with no spare buffer, a full one waits for the oldest write still going.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let staged = Int(position - stagedFrom)
            let count = min(bytes.count - done, Self.stagingSize - staged)
            let copyStarted = MonotonicClock.nanoseconds()
            (staging.baseAddress! + staged).copyMemory(from: bytes.baseAddress! + done, byteCount: count)
            timings.copy += MonotonicClock.since(copyStarted)
            done += count
            position += Int64(count)
            if position - stagedFrom == Int64(Self.stagingSize) {
                try writeFullBufferInBackground()
            }
        }
    }

    /// Writes what is staged and makes every appended byte durable (fdatasync), on the blocking pool.
    public func sync() async throws {
        try await threads.blockingIO { [self] in
            try finishInFlightWrites()
            let writeStarted = MonotonicClock.nanoseconds()
            let staged = Int(position - stagedFrom)
            let whole = staged / Self.block * Self.block
            if whole > 0 { try writeStaged(count: whole) }
            // The last partial block goes through the page cache; it stays staged, so the next full
            // buffer rewrites it whole, committed bytes and all.
            let tail = Int(position - stagedFrom)
            if tail > 0 { try write(fd, staging.baseAddress!, count: tail, at: stagedFrom) }
            let syncStarted = MonotonicClock.nanoseconds()
            timings.finalWrite += syncStarted &- writeStarted
            guard fdatasync(fd) == 0 else { throw StorageError.from("fdatasync", errno: errno) }
            timings.fdatasync += MonotonicClock.since(syncStarted)
        }
    }

    /// Drops everything appended by this request (a chunk that failed its checksum, say), off the calling
    /// thread: truncating a large tail frees its extents.
    public func discard() async throws {
        try await threads.blockingIO { [self] in try discard() }
    }

    @available(*, noasync, message: "ftruncate can wait on the disk: use the async overload")
    public func discard() throws {
        _ = try? finishInFlightWrites()  // their bytes are being thrown away; none may land after the truncation
        guard ftruncate(fd, off_t(start)) == 0 else { throw StorageError.from("ftruncate", errno: errno) }
        position = start
        try stageCommittedHead()
    }

    /// Stages the committed bytes of the block `start` falls in, so writes begin on a block boundary.
    private func stageCommittedHead() throws {
        let head = Int(start % Int64(Self.block))
        stagedFrom = start - Int64(head)
        var done = 0
        while done < head {
            let n = pread(fd, staging.baseAddress! + done, head - done, off_t(stagedFrom) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw StorageError.from("read", errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    /// Hands the full staging buffer to a writer thread and continues in a spare one; with none spare, first
    /// waits for the oldest write (which reports any error, a full disk say).
    private func writeFullBufferInBackground() throws {
        if spare.isEmpty { try finishOldestWrite() }
        let (target, offset) = (directFD, stagedFrom)
        // Handed over: nothing touches this buffer again until `finishOldestWrite` has waited for the write.
        nonisolated(unsafe) let buffer = staging
        let write = InFlightWrite()
        threads.writers.submit { _ in
            let started = MonotonicClock.nanoseconds()
            let result = Result { try self.writeOrFallBack(target, buffer, count: Self.stagingSize, at: offset) }
            write.finish(result, took: MonotonicClock.since(started))
        }
        inFlight.append((buffer, write))
        staging = spare.removeLast()
        stagedFrom += Int64(Self.stagingSize)
    }

    /// Waits for the oldest background write; its buffer is spare again, whether the write succeeded or not.
    private func finishOldestWrite() throws {
        let (buffer, write) = inFlight.removeFirst()
        let waitStarted = MonotonicClock.nanoseconds()
        defer {
            spare.append(buffer)
            timings.writerWait += MonotonicClock.since(waitStarted)
            timings.deviceWrite += write.took
            timings.backgroundWrites += 1
        }
        try write.wait()
    }

    /// Waits for every background write, even past a failed one (no write may outlive this call), then
    /// throws the first failure.
    private func finishInFlightWrites() throws {
        var failure: (any Error)?
        while !inFlight.isEmpty {
            do { try finishOldestWrite() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    /// Writes the first `count` staged bytes (a multiple of the block size) and keeps the rest staged.
    private func writeStaged(count: Int) throws {
        try writeOrFallBack(directFD, staging, count: count, at: stagedFrom)
        let rest = Int(position - stagedFrom) - count
        if rest > 0 { staging.baseAddress!.copyMemory(from: staging.baseAddress! + count, byteCount: rest) }
        stagedFrom += Int64(count)
    }

    private func writeOrFallBack(
        _ target: Int32, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int64
    ) throws {
        do {
            try write(target, buffer.baseAddress!, count: count, at: offset)
        } catch StorageError.io(_, EINVAL) where target != fd {
            // This device wants a larger alignment than ours: the page cache it is (for this write; the
            // next ones find out the same way, which costs one failed call per MiB).
            try write(fd, buffer.baseAddress!, count: count, at: offset)
        }
    }

    private func write(_ target: Int32, _ bytes: UnsafeRawPointer, count: Int, at offset: Int64) throws {
        var done = 0
        while done < count {
            let n = pwrite(target, bytes + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageError.from("write", errno: errno)
            }
            done += n
        }
    }
}

/// A result a background task or thread hands to a thread that blocks for it: a write waited for before its buffer
/// is reused (`InFlightWrite`), a read that the S3 reader's synchronous API waits for.
package final class BlockingResult<Value>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<Value, any Error>?

    package init() {}

    package func finish(_ result: Result<Value, any Error>) {
        self.result = result
        done.signal()
    }

    /// Blocks until `finish`. A result not yet there is never waited for on an event loop: the work may need that
    /// loop (tasks run on the loops that serve requests: the S3 appender's part upload, the S3 reader's GET), and
    /// every other connection of the loop would wait too. One already there returns at once anywhere.
    package func wait() throws -> Value {
        if done.wait(timeout: .now()) == .timedOut {
            precondition(MultiThreadedEventLoopGroup.currentEventLoop == nil,
                         "a blocking wait on an event loop: hand the work to a bulk-work or blocking-pool thread")
            done.wait()
        }
        return try result!.get()
    }
}

/// One background write (a device write here, a part upload in the S3 appender): its result, waited for (blocking,
/// from a bulk-work or blocking-pool thread) before its buffer is reused or its bytes are called durable.
package final class InFlightWrite: @unchecked Sendable {
    private let outcome = BlockingResult<Void>()
    /// Nanoseconds the write took on its thread; read only after `wait`.
    package private(set) var took: UInt64 = 0

    package init() {}

    package func finish(_ result: Result<Void, any Error>, took: UInt64) {
        self.took = took
        outcome.finish(result)
    }

    package func wait() throws { try outcome.wait() }
}

/// Where one `BlobAppender`'s time went, in nanoseconds on the monotonic clock: the storage part of an
/// upload request's timeline (`AppendTimeline`, `--trace-uploads`).
public struct BlobIOTimings: Sendable, Equatable, Codable {
    /// Copying request bytes into the staging buffer (on the hashing lane that writes).
    public var copy: UInt64 = 0
    /// Waiting for the oldest background write to finish before its buffer could be refilled (the hashing
    /// stalled on the disk), and in `sync` for the writes still going.
    public var writerWait: UInt64 = 0
    /// Background writes of full staging buffers, on the writer threads (overlaps the hashing).
    public var deviceWrite: UInt64 = 0
    /// Full staging buffers written in the background.
    public var backgroundWrites = 0
    /// In `sync`: writing what was still staged (the request's last partial MiB).
    public var finalWrite: UInt64 = 0
    /// In `sync`: the fdatasync.
    public var fdatasync: UInt64 = 0

    public init() {}
}

/// Reads ranges of a committed blob; each read is independent (pread), so many downloads can share nothing.
public final class FileBlobReader: BlobReader, @unchecked Sendable {
    private let fd: Int32
    private let threads: StorageThreads

    package init(fd: Int32, threads: StorageThreads) {
        self.fd = fd
        self.threads = threads
    }

    deinit { close(fd) }

    /// The same read on the blocking pool, for async callers (pread may wait on the disk).
    public func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) async throws -> ByteBuffer {
        try await threads.blocking.runIfActive { [self] in try read(at: offset, count: count, allocator: allocator) }
    }

    /// Reads up to `target.count` bytes at `offset` into `target`, for readers that keep their own buffer (the
    /// bundle index's single pass); returns how many, fewer only at end of file.
    @available(*, noasync, message: "pread can wait on the disk: run it on a blocking thread")
    public func read(at offset: Int64, into target: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = target.baseAddress, target.count > 0 else { return 0 }
        while true {
            let n = pread(fd, base, target.count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR { throw StorageError.from("read", errno: errno) }
        }
    }
}
