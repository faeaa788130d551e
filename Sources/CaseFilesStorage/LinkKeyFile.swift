import Foundation
import CaseFilesCore

/// `<storage>/link-signing.key` (mode 0600): the link-signing keys, kept out of the database so that a copy
/// of the database (a backup, a support bundle) cannot forge links. Text, one key a line in hex:
///
///     current 9f86d081...
///     previous 2c26b46b...
///
/// Written whole to a temporary file and renamed over the old one, so a reader sees the old or the new
/// keys, never half of them. `serve` re-reads it when it changes, so `casefiles keys rotate-link-key`
/// takes effect without a restart.
public final class LinkKeyFile: @unchecked Sendable {
    public static let name = "link-signing.key"
    public let path: String
    private let lock = NSLock()
    /// The keys last read and the identity (inode, change time, size) of the file they came from.
    private var cached: (identity: [Int], keys: LinkSigningKeys)?

    public init(root: URL) {
        path = root.appendingPathComponent(Self.name).path
    }

    /// The current keys, re-read if the file changed since the last call.
    /// - Throws: `LinkKeyFileError` if the file is missing or damaged (never replaced silently: that would
    ///   invalidate every link), `StorageError` if it cannot be read.
    public func keys() throws -> LinkSigningKeys {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw errno == ENOENT ? LinkKeyFileError.missing(path) : StorageError.from("stat \(path)", errno: errno)
        }
        let identity = [Int(info.st_ino), Int(info.st_ctim.tv_sec), Int(info.st_ctim.tv_nsec), Int(info.st_size)]
        return try lock.withLock {
            if let cached, cached.identity == identity { return cached.keys }
            let keys = try Self.parse(try String(contentsOfFile: path, encoding: .utf8), path: path)
            cached = (identity, keys)
            return keys
        }
    }

    /// Writes a file with a fresh current key if there is none; `legacy` (a key moved out of the database)
    /// becomes the current key instead, so links signed with it keep working.
    /// - Returns: whether a file was written.
    @discardableResult
    public func createIfMissing(legacy: [UInt8]? = nil) throws -> Bool {
        guard access(path, F_OK) != 0 else { return false }
        try store(LinkSigningKeys(current: legacy ?? SecureRandom.bytes(LinkSigningKeys.byteCount)))
        return true
    }

    /// A fresh current key; the current one becomes the previous one and the previous one is dropped (links
    /// signed with it stop working, which is what a rotation after a leak needs).
    /// - Returns: the new keys.
    @discardableResult
    public func rotate() throws -> LinkSigningKeys {
        let old = try keys()
        let new = LinkSigningKeys(current: SecureRandom.bytes(LinkSigningKeys.byteCount), previous: old.current)
        try store(new)
        return new
    }

    /// Temporary file (0600, O_EXCL), fsync, rename, fsync of the folder: durable and atomic.
    private func store(_ keys: LinkSigningKeys) throws {
        var text = "current \(keys.current.hexString)\n"
        if let previous = keys.previous { text += "previous \(previous.hexString)\n" }
        let temporary = "\(path).\(SecureRandom.identifier()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, PrivateStorage.fileMode)
        guard fd >= 0 else { throw StorageError.from("create \(temporary)", errno: errno) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw StorageError.from("write \(path)", errno: code)
        }
        try FileBlobStore.syncDirectory((path as NSString).deletingLastPathComponent)
    }

    package static func parse(_ text: String, path: String) throws -> LinkSigningKeys {
        var current: [UInt8]?
        var previous: [UInt8]?
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let key = [UInt8](hex: String(fields[1]), byteCount: LinkSigningKeys.byteCount)
            else { throw LinkKeyFileError.damaged(path) }
            switch fields[0] {
            case "current" where current == nil: current = key
            case "previous" where previous == nil: previous = key
            default: throw LinkKeyFileError.damaged(path)
            }
        }
        guard let current else { throw LinkKeyFileError.damaged(path) }
        return LinkSigningKeys(current: current, previous: previous)
    }
}

public enum LinkKeyFileError: Error, CustomStringConvertible {
    case missing(String)
    case damaged(String)

    public var description: String {
        switch self {
        case .missing(let path):
            "the link-signing key file \(path) is missing; opening the storage root creates it"
        case .damaged(let path):
            "the link-signing key file \(path) is damaged: it must hold a line `current <64 hex digits>` and may "
                + "hold a line `previous <64 hex digits>`. Restore it from a backup, or delete it to start with a "
                + "new key (every download link handed out so far then stops working)."
        }
    }
}
