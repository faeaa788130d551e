import Foundation
import CaseFilesCore

/// Copying blobs from one storage root into another, for `casefiles backup` and `casefiles restore`.
extension FileBlobStore {
    public enum ExportMethod: Sendable, Equatable {
        /// A hard link: no bytes copied (same file system, an immutable verified blob).
        case linked
        /// Bytes copied.
        case copied(bytes: Int64)
    }

    /// Puts blob `id`'s first `length` bytes into `destination`, as a hard link when `link` is set and both are on one
    /// file system (only for verified blobs: they never change again), else as a copy of exactly `length` bytes (an
    /// unfinished blob may hold uncommitted bytes past its committed offset, and its next append truncates them).
    /// The new file is 0600 and fsynced; call `syncFolders()` on the destination after the last one.
    /// - Throws: `StorageError.missingBlob` if the source file is gone; `StorageError.io` if it holds fewer than
    ///   `length` bytes or a read, write or fsync fails.
    @available(*, noasync, message: "copies a file, blocking")
    public func export(id: String, length: Int64, to destination: FileBlobStore, link allowLink: Bool) throws -> ExportMethod {
        let source = path(for: id)
        let target = destination.path(for: id)
        try PrivateStorage.makeDirectory((target as NSString).deletingLastPathComponent)
        if allowLink {
            if link(source, target) == 0 { return .linked }
            switch errno {
            case ENOENT: throw StorageError.missingBlob(id)
            case EXDEV, EPERM, EMLINK: break  // another file system, or links refused: copy
            default: throw StorageError.from("link \(target)", errno: errno)
            }
        }
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw errno == ENOENT ? StorageError.missingBlob(id) : StorageError.from("open", errno: errno) }
        defer { close(input) }
        let output = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, PrivateStorage.fileMode)
        guard output >= 0 else { throw StorageError.from("create \(target)", errno: errno) }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var copied: Int64 = 0
        while copied < length {
            let want = Int(min(Int64(buffer.count), length - copied))
            let count = buffer.withUnsafeMutableBytes { pread(input, $0.baseAddress, want, off_t(copied)) }
            if count < 0 { throw StorageError.from("read \(source)", errno: errno) }
            if count == 0 { throw StorageError.io(operation: "blob \(id) is shorter than its \(length) committed bytes", errno: 0) }
            var written = 0
            while written < count {
                let result = buffer.withUnsafeBytes { write(output, $0.baseAddress! + written, count - written) }
                if result < 0 { throw StorageError.from("write \(target)", errno: errno) }
                written += result
            }
            copied += Int64(count)
        }
        guard fsync(output) == 0 else { throw StorageError.from("fsync \(target)", errno: errno) }
        return .copied(bytes: copied)
    }

    /// fsyncs `blobs/` and every shard folder in it, so the new directory entries are durable.
    @available(*, noasync, message: "fsyncs folders, blocking")
    public func syncFolders() throws {
        for shard in try FileManager.default.contentsOfDirectory(atPath: root.path) {
            try Self.syncDirectory(root.appendingPathComponent(shard).path)
        }
        try Self.syncDirectory(root.path)
    }
}

/// Private files copied whole (the link-signing key, the webhook secret): 0600, fsynced.
public enum PrivateFileCopy {
    /// Copies `source` to `target` (which must not exist). Returns false if `source` does not exist.
    /// - Throws: `StorageError` when reading or writing fails.
    @discardableResult
    public static func copy(_ source: String, to target: String) throws -> Bool {
        guard let data = FileManager.default.contents(atPath: source) else {
            if access(source, F_OK) != 0 { return false }
            throw StorageError.from("read \(source)", errno: errno)
        }
        let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, PrivateStorage.fileMode)
        guard fd >= 0 else { throw StorageError.from("create \(target)", errno: errno) }
        defer { close(fd) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else { throw StorageError.from("write \(target)", errno: errno) }
        return true
    }

    /// Creates `path` as a private folder (0700) if missing and checks it is empty: backups and restores never
    /// write into a folder that holds something.
    /// - Throws: `StorageError` if it cannot be made; `FolderNotEmpty` if it holds anything.
    public static func makeEmptyFolder(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try PrivateStorage.makeDirectory(path)
        let entries = try FileManager.default.contentsOfDirectory(atPath: path)
        guard entries.isEmpty else { throw FolderNotEmpty(path: path) }
        _ = chmod(path, PrivateStorage.directoryMode)
    }
}

public struct FolderNotEmpty: Error, CustomStringConvertible {
    public let path: String
    public var description: String {
        "\(path) is not empty: give a new or empty folder (nothing is ever written over)"
    }
}
