import Foundation
import CaseFilesCore

/// The storage root holds secrets (the link-signing key, token hashes, every case's metadata and files), so
/// everything under it is private to the service's user: folders 0700, files 0600. This is the one place
/// that says so: what creates a path under the root uses these modes, and `check` finds what does not.
public enum PrivateStorage {
    public static let directoryMode: mode_t = 0o700
    public static let fileMode: mode_t = 0o600
    /// Group and other permission bits: none may be set on anything under the root.
    package static let sharedBits: mode_t = 0o077

    /// Runs `body` with the process umask at 077, so a file a library creates on the way (SQLite's database,
    /// its -wal and -shm) cannot come out readable by others whatever mode the library asks for.
    /// The umask is process-wide: call this only while nothing else creates files (opening storage, at start).
    /// The umask is process-wide, so two of these at once (tests open several roots in parallel) must not
    /// interleave: the second would save 077 as "previous" and leave it behind.
    private static let umaskLock = NSLock()

    package static func withPrivateUmask<T>(_ body: () throws -> T) rethrows -> T {
        umaskLock.lock()
        defer { umaskLock.unlock() }
        let previous = umask(sharedBits)
        defer { umask(previous) }
        return try body()
    }

    /// Creates a folder with mode 0700 unless it exists (an existing one is left as it is, for `check`).
    /// - Throws: `StorageError` when mkdir fails for any reason but EEXIST.
    package static func makeDirectory(_ path: String) throws {
        if mkdir(path, directoryMode) != 0 && errno != EEXIST {
            throw StorageError.from("mkdir \(path)", errno: errno)
        }
    }

    /// Creates an empty file with mode 0600 unless it exists (an empty file is a valid new SQLite database).
    /// - Throws: `StorageError` when open fails.
    package static func makeFile(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, fileMode)
        guard fd >= 0 else { throw StorageError.from("create \(path)", errno: errno) }
        close(fd)
    }

    /// A path under the storage root that group or others may access.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        /// Permission bits (`st_mode & 0o7777`).
        public var mode: mode_t
        public var isDirectory: Bool

        public var wanted: mode_t { isDirectory ? PrivateStorage.directoryMode : PrivateStorage.fileMode }
        public var chmod: String { "chmod \(PrivateStorage.octal(wanted).dropFirst()) '\(path)'" }
        public var description: String {
            "\(path) has mode \(PrivateStorage.octal(mode)) but holds secrets: it should be \(PrivateStorage.octal(wanted)) "
                + "(run: \(chmod))"
        }
    }

    package static func octal(_ mode: mode_t) -> String { String(format: "%04o", mode & 0o7777) }

    /// Each of `paths` that exists and has group or other permission bits, in the order given.
    public static func check(_ paths: [String]) -> [Problem] {
        paths.compactMap { path in
            var info = stat()
            guard lstat(path, &info) == 0 else { return nil }  // not created yet: nothing to leak
            let mode = info.st_mode & 0o7777
            guard mode & sharedBits != 0 else { return nil }
            return Problem(path: path, mode: mode, isDirectory: info.st_mode & S_IFMT == S_IFDIR)
        }
    }
}

/// `serve --strict-permissions` found paths under the storage root that others may read.
public struct StoragePermissionsError: Error, CustomStringConvertible {
    public var problems: [PrivateStorage.Problem]

    public init(problems: [PrivateStorage.Problem]) {
        self.problems = problems
    }

    public var description: String {
        "refusing to start: the storage root holds secrets but \(problems.count) path(s) under it are open to other "
            + "users:\n" + problems.map { "  \($0.path) has mode \(PrivateStorage.octal($0.mode)), wants \(PrivateStorage.octal($0.wanted))" }
            .joined(separator: "\n")
            + "\nfix with:\n" + problems.map { "  \($0.chmod)" }.joined(separator: "\n")
    }
}
