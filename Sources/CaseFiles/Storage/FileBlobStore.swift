import CLinuxIO
import Foundation
import NIOCore
import NIOPosix

/// Blobs as plain files under `<root>/blobs/<first two id characters>/<id>`.
public struct FileBlobStore: BlobStore {
    public let root: URL

    public init(root: URL) throws {
        self.root = root.appendingPathComponent("blobs", isDirectory: true)
        try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
    }

    func path(for id: String) -> String {
        // Ids are generated here as hex; refuse anything else so no id can name a path outside the root.
        precondition(SecureRandom.isIdentifier(id), "invalid blob id")
        return root.appendingPathComponent(String(id.prefix(2))).appendingPathComponent(id).path
    }

    public func create(id: String) throws {
        let path = path(for: id)
        let directory = (path as NSString).deletingLastPathComponent
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StorageError.from("mkdir", errno: errno)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StorageError.from("create", errno: errno) }
        defer { close(fd) }
        // Make the new directory entry durable too, so a committed upload never lacks its file.
        guard fsync(fd) == 0 else { throw StorageError.from("fsync", errno: errno) }
        try Self.syncDirectory(directory)
    }

    public func openForAppend(id: String, at offset: Int64) throws -> BlobAppender {
        let fd = open(path(for: id), O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? StorageError.missingBlob(id) : StorageError.from("open", errno: errno)
        }
        guard ftruncate(fd, off_t(offset)) == 0 else {
            let code = errno
            close(fd)
            throw StorageError.from("ftruncate", errno: code)
        }
        return BlobAppender(fd: fd, start: offset)
    }

    public func openForReading(id: String) throws -> BlobReader {
        let fd = open(path(for: id), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? StorageError.missingBlob(id) : StorageError.from("open", errno: errno)
        }
        return BlobReader(fd: fd)
    }

    public func remove(id: String) throws {
        if unlink(path(for: id)) != 0 && errno != ENOENT {
            throw StorageError.from("unlink", errno: errno)
        }
    }

    public func storedIDs() throws -> [String] {
        let fm = FileManager.default
        // Only names this store could have made; anything else dropped here is left alone.
        return try fm.contentsOfDirectory(atPath: root.path).flatMap { shard in
            (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(shard).path)) ?? []
        }.filter(SecureRandom.isIdentifier)
    }

    public func lastModified(id: String) -> Date? {
        try? FileManager.default.attributesOfItem(atPath: path(for: id))[.modificationDate] as? Date
    }

    public func availableBytes() throws -> Int64 {
        var stats = statvfs()
        guard statvfs(root.path, &stats) == 0 else { throw StorageError.from("statvfs", errno: errno) }
        return Int64(stats.f_bavail) * Int64(stats.f_frsize)
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError.from("open directory", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StorageError.from("fsync directory", errno: errno) }
    }
}

/// Appends one request's bytes to a blob. Owned by exactly one request at a time (the upload's
/// writer lock guarantees it), hence `@unchecked Sendable`.
public final class BlobAppender: @unchecked Sendable {
    private let fd: Int32
    /// The committed length the appender started from.
    public let start: Int64
    /// Where the next byte goes.
    public private(set) var position: Int64
    /// Bytes before this have had write-back started.
    private var writebackFrom: Int64
    /// Bytes before this are on the device and out of the page cache (this request's, that is).
    private var droppedFrom: Int64
    /// Small enough that the fdatasync before an acknowledgement finds at most a few MiB to write.
    static let writebackStep: Int64 = 2 << 20
    /// How far behind the write-back front pages are dropped from the page cache.
    static let dropLag: Int64 = 6 << 20

    init(fd: Int32, start: Int64) {
        self.fd = fd
        self.start = start
        self.position = start
        self.writebackFrom = start
        self.droppedFrom = start
    }

    deinit { close(fd) }

    /// Writes to the page cache; a 64 KiB pwrite returns in microseconds, so it runs inline.
    /// Durability comes from `sync()`, which is the slow call and runs off the cooperative pool.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageError.from("write", errno: errno)
            }
            done += n
            position += Int64(n)
        }
        // Start write-back every few MiB so the fdatasync before the acknowledgement is short
        // instead of flushing a whole chunk at once, and drop what was handed to the device a few steps
        // earlier (by now usually written, so the wait is short) from the page cache; waiting also paces
        // a client faster than the disk. Failures here only lose the head start or leave pages cached.
        if position - writebackFrom >= Self.writebackStep {
            _ = casefiles_start_writeback(fd, off_t(writebackFrom), off_t(position - writebackFrom))
            let dropUpTo = writebackFrom - Self.dropLag
            if dropUpTo > droppedFrom {
                _ = casefiles_drop_behind(fd, off_t(droppedFrom), off_t(dropUpTo - droppedFrom))
                droppedFrom = dropUpTo
            }
            writebackFrom = position
        }
    }

    /// Makes every appended byte durable (fdatasync) on NIO's blocking-I/O thread pool.
    public func sync() async throws {
        let (fd, cachedFrom, end) = (self.fd, droppedFrom, position)
        try await NIOThreadPool.singleton.runIfActive {
            guard fdatasync(fd) == 0 else { throw StorageError.from("fdatasync", errno: errno) }
            // Now clean, the rest of this request's pages leave the cache at no cost (see drop-behind).
            _ = casefiles_drop_cached(fd, off_t(cachedFrom), off_t(end - cachedFrom))
        }
        droppedFrom = end
    }

    /// Drops everything appended by this request (a chunk that failed its checksum, say).
    public func discard() throws {
        guard ftruncate(fd, off_t(start)) == 0 else { throw StorageError.from("ftruncate", errno: errno) }
        position = start
        writebackFrom = start
    }
}

/// Reads ranges of a committed blob; each read is independent (pread), so many downloads can share nothing.
public final class BlobReader: @unchecked Sendable {
    private let fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Reads up to `count` bytes at `offset` into a new buffer; fewer only at end of file.
    public func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            while true {
                let n = pread(fd, target.baseAddress!, count, off_t(offset))
                if n >= 0 { return n }
                if errno != EINTR { throw StorageError.from("read", errno: errno) }
            }
        }
        return buffer
    }
}
