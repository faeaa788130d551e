import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import CaseFilesCore

/// Where `casefiles download` writes.
public enum DownloadDestination: Sendable, Equatable {
    /// A path the user named (`-o FILE`): used as is, never numbered; an existing file there is refused
    /// unless `--force`.
    case file(String)
    /// A directory (`-o DIR`, `--all`, or `.` without `-o`): the attachment's name made safe by
    /// `LocalFileName`, numbered (`server (1).log`) when taken.
    case directory(String)

    /// `-o` as given: absent is `.`; an existing directory, or a path ending in `/`, is a directory.
    public init(output: String?) {
        guard let output else {
            self = .directory(".")
            return
        }
        var isDirectory: ObjCBool = false
        if output.hasSuffix("/") || (FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory)
                                     && isDirectory.boolValue) {
            self = .directory(output)
        } else {
            self = .file(output)
        }
    }

    /// The `n`th path to try for `name` (0 first), or nil when there is no other.
    package func candidate(_ n: Int, name: LocalFileName) -> String? {
        switch self {
        case .file(let path):
            return n == 0 ? path : nil
        case .directory(let directory):
            let file = name.numbered(n)
            if directory == "." { return file }
            return directory.hasSuffix("/") ? directory + file : directory + "/" + file
        }
    }
}

/// Downloads an attachment to `PATH.<id>.part` (`partPath`), resuming with `Range` + `If-Range` after interruptions,
/// and moves it to `PATH` only when its SHA-256 matches the server's `Repr-Digest`. Never replaces an
/// existing file unless asked (`force`): see `choose` and `publish`.
public struct AttachmentDownloader: Sendable {
    public let client: CaseFilesClient
    public let quiet: Bool

    /// How many numbered names (`server (1).log` …) are tried before giving up.
    package static let maxNumber = 10_000

    public init(client: CaseFilesClient, quiet: Bool = false) {
        self.client = client
        self.quiet = quiet
    }

    public struct Result: Sendable {
        public var path: String
        public var sha256: String
        public var size: Int64
        public var bytesReceived: Int64
        /// A file with this SHA-256 was already at `path`: nothing was written.
        public var alreadyPresent: Bool
    }

    /// Which path a download goes to, decided before the first byte.
    package enum Choice: Equatable {
        /// `path` already holds exactly this attachment.
        case present(String)
        /// Write to `path`, the `number`th candidate.
        case write(path: String, number: Int)
    }

    /// - Parameters:
    ///   - destination: where to write (`DownloadDestination`).
    ///   - force: replace a file already at the chosen path, instead of taking the next number (a
    ///     directory) or refusing (`-o FILE`).
    ///   - written: the paths this run already wrote. They are never chosen again, even with `force`: two
    ///     attachments with one name must not end up as one file.
    /// - Throws: `ClientFailure`: `.localFile` when the path is taken or a file cannot be written,
    ///   `.integrity` when the bytes do not verify, `.refused` and `.unreachable` from the server.
    public func download(id: String, to destination: DownloadDestination, force: Bool = false,
                         avoiding written: Set<String> = []) async throws -> Result {
        let attachment = try await client.attachment(id: id)
        guard let expected = attachment.sha256 else { throw ClientFailure(.refused, "attachment \(id) has no SHA-256") }
        let name = LocalFileName(untrusted: attachment.filename)
        let number: Int
        let target: String
        switch try Self.choose(destination, name: name, size: attachment.size, sha256: expected, force: force,
                               avoiding: written) {
        case .present(let path):
            return Result(path: path, sha256: expected, size: attachment.size, bytesReceived: 0, alreadyPresent: true)
        case .write(let path, let n):
            (target, number) = (path, n)
        }
        let part = Self.partPath(target, attachmentID: attachment.id)
        let handle = try Self.openPart(part)
        defer { try? handle.close() }

        var have = Int64(try handle.seekToEnd())
        if have > attachment.size {
            try handle.truncate(atOffset: 0)
            have = 0
        }
        var digest = SHA256Digest()
        if have > 0 {  // the part already on disk must be hashed once to verify the whole file at the end
            try handle.seek(toOffset: 0)
            var read: Int64 = 0
            while read < have, let data = try handle.read(upToCount: 8 << 20), !data.isEmpty {
                digest.update(data)
                read += Int64(data.count)
            }
        }
        let progress = TransferProgress(label: "downloading", total: attachment.size, startingAt: have, quiet: quiet)
        var received: Int64 = 0
        var serverDigest: String?
        var attempt = 0
        let etag = "\"sha256-\(expected)\""
        while have < attachment.size {
            attempt += 1
            let before = have
            do {
                var request = client.request("/api/v1/attachments/\(id)/content", method: .GET)
                if have > 0 {
                    request.headers.add(name: "Range", value: "bytes=\(have)-")
                    request.headers.add(name: "If-Range", value: etag)
                }
                let response = try await client.http.execute(request, timeout: client.requestTimeout)
                switch response.status.code {
                case 200:
                    if have > 0 {  // the attachment is not what the part was made of: start over
                        try handle.truncate(atOffset: 0)
                        digest = SHA256Digest()
                        have = 0
                    }
                case 206:
                    guard response.headers.first(name: "Content-Range")?.hasPrefix("bytes \(have)-") == true else {
                        throw ClientFailure(.refused, "the server answered a different range than asked")
                    }
                case 500...:
                    throw ClientFailure(.unreachable, "server error \(response.status.code)")
                default:
                    let body = try await response.body.collect(upTo: 1 << 20)
                    throw ClientFailure(.refused, "download refused: \(CaseFilesClient.Reply(status: Int(response.status.code), headers: response.headers, body: body).errorText)")
                }
                serverDigest = Self.reprDigest(response.headers)
                try handle.seek(toOffset: UInt64(have))
                for try await buffer in response.body {
                    buffer.withUnsafeReadableBytes { digest.update($0) }
                    try handle.write(contentsOf: buffer.readableBytesView)
                    have += Int64(buffer.readableBytes)
                    received += Int64(buffer.readableBytes)
                    progress.update(have)
                }
            } catch let failure as ClientFailure where failure.kind != .unreachable {
                throw failure
            } catch {
                if have > before { attempt = 1 }  // progress was made: the retry budget is per stall, not per file
                guard attempt < client.retry.maxAttempts else {
                    throw ClientFailure(.unreachable, "downloading \(id) failed after \(attempt) attempts: \(error)")
                }
                let delay = client.retry.delay(beforeRetry: attempt)
                if !quiet { print("download interrupted at byte \(have) (\(error)); resuming in \(String(format: "%.1f", delay)) s") }
                try await Task.sleep(for: .seconds(delay))
            }
        }
        if serverDigest == nil {  // the part was already complete: ask for the digest alone
            let reply = try await client.send("reading the digest") {
                client.request("/api/v1/attachments/\(id)/content", method: .HEAD)
            }
            serverDigest = Self.reprDigest(reply.headers)
        }
        progress.update(have, force: true)
        progress.finish()
        let actual = digest.finalize().hexString
        guard actual == expected, serverDigest == expected else {
            try? FileManager.default.removeItem(atPath: part)
            throw ClientFailure(.integrity, "the download of attachment \(id) (\(target)) has SHA-256 \(actual), the server "
                                + "declares \(serverDigest ?? "nothing") and recorded \(expected); the partial file was deleted")
        }
        try handle.synchronize()
        let path = try Self.publish(part: part, destination, name: name, from: number, force: force, avoiding: written)
        return Result(path: path, sha256: actual, size: have, bytesReceived: received, alreadyPresent: false)
    }

    /// `Repr-Digest: sha-256=:…:` as hex.
    package static func reprDigest(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "Repr-Digest").flatMap { try? WireFormat.parseReprDigest($0).get() }
    }

    // MARK: - Local files: never replace one unless asked

    /// The first candidate path that is free (nothing there, not even a dangling symbolic link), or that
    /// already holds this very attachment (`.present`), or, with `force`, the first one.
    package static func choose(_ destination: DownloadDestination, name: LocalFileName, size: Int64, sha256: String,
                       force: Bool, avoiding written: Set<String>) throws -> Choice {
        for n in 0..<maxNumber {
            guard let path = destination.candidate(n, name: name) else { break }
            if written.contains(path) { continue }
            guard let status = try linkStatus(path) else { return .write(path: path, number: n) }
            if isIdentical(path, status, size: size, sha256: sha256) { return .present(path) }
            if force { return .write(path: path, number: n) }
        }
        switch destination {
        case .file(let path) where written.contains(path):
            throw ClientFailure(.localFile, "\(path) was written by this run already; give a directory as --output")
        case .file(let path):
            throw ClientFailure(.localFile, "\(path) exists and holds something else: pass --force to replace it, "
                                + "or another --output")
        case .directory(let directory):
            throw ClientFailure(.localFile, "\(directory) has no free name for \(name) up to number \(maxNumber)")
        }
    }

    /// `lstat`: nil when nothing is at `path`; a symbolic link is reported as itself, never followed.
    package static func linkStatus(_ path: String) throws -> stat? {
        var status = stat()
        if lstat(path, &status) == 0 { return status }
        if errno == ENOENT { return nil }
        throw ClientFailure(.localFile, "cannot check \(path): \(String(cString: strerror(errno)))")
    }

    /// Whether `path` is a regular file (not a link) of `size` bytes with this SHA-256: a download run
    /// again after it finished (or `--all` again after an interruption) then keeps it rather than
    /// writing a numbered copy. Unreadable counts as different.
    package static func isIdentical(_ path: String, _ status: stat, size: Int64, sha256: String) -> Bool {
        guard status.st_mode & S_IFMT == S_IFREG, Int64(status.st_size) == size else { return false }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var digest = SHA256Digest()
        do {
            while let data = try handle.read(upToCount: 8 << 20), !data.isEmpty { digest.update(data) }
        } catch {
            return false
        }
        return digest.finalize().hexString == sha256
    }

    /// Where the bytes of `attachmentID` gather before they are verified: the final path plus the first 12
    /// hex digits of the id, so a file of the user's own named `server.log.part` is never resumed into,
    /// truncated or deleted as if it were ours (found in review), and a part is only ever resumed by a download
    /// of the same attachment.
    package static func partPath(_ target: String, attachmentID: String) -> String {
        "\(target).\(attachmentID.prefix(12)).part"
    }

    /// Opens `part` to resume it, or creates it. Creation is `O_CREAT | O_EXCL`: it never truncates a
    /// file and never follows a symbolic link (a dangling one included), even one created a moment after
    /// the check. An existing part is resumed only if it is a regular file (`O_NOFOLLOW`, then `fstat`),
    /// never through a link planted to make the download write elsewhere.
    package static func openPart(_ part: String) throws -> FileHandle {
        var fd = open(part, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 && errno == EEXIST {
            fd = open(part, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            var status = stat()
            if fd >= 0 && (fstat(fd, &status) != 0 || status.st_mode & S_IFMT != S_IFREG) {
                close(fd)
                throw ClientFailure(.localFile, "\(part) exists and is not a regular file: remove it and retry")
            }
        }
        guard fd >= 0 else {
            throw ClientFailure(.localFile, "cannot open \(part): \(String(cString: strerror(errno)))")
        }
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Gives the verified `part` its final name, the `number`th candidate or, if a file appeared there
    /// while the bytes arrived, the next free one (`-o FILE` has no next: the part is kept and the
    /// run fails). Returns the final path.
    ///
    /// The race: `rename(2)` replaces whatever is at the new name, so checking first and renaming after
    /// would replace a file created in between. `link(2)` instead fails with EEXIST if anything (a link
    /// included) is at the new name, checked and created in one step by the kernel; the part's own name
    /// is then unlinked. A crash between the two leaves both names for the same verified bytes, and the
    /// next run finds the file identical and keeps it. Where the file system has no hard links (FAT, some
    /// network mounts: EPERM, ENOTSUP, EMLINK), an `O_EXCL` create reserves the name and `rename` replaces
    /// only that empty placeholder; that leaves one window, a process deleting our placeholder and putting
    /// its own file there between the two calls, which needs someone racing us on purpose in this directory.
    /// With `force`, `rename` replaces the file at the chosen path, as asked.
    package static func publish(part: String, _ destination: DownloadDestination, name: LocalFileName, from number: Int,
                        force: Bool, avoiding written: Set<String>) throws -> String {
        func failure(_ what: String) -> ClientFailure {
            ClientFailure(.localFile, "cannot \(what): \(String(cString: strerror(errno))); the verified file is \(part)")
        }
        var n = number
        while n < maxNumber, let path = destination.candidate(n, name: name) {
            n += 1
            if written.contains(path) { continue }
            if force {
                guard rename(part, path) == 0 else { throw failure("rename \(part) to \(path)") }
                return path
            }
            if link(part, path) == 0 {
                guard unlink(part) == 0 else { throw failure("remove \(part) after linking it to \(path)") }
                return path
            }
            switch errno {
            case EEXIST:
                continue
            case EPERM, ENOTSUP, EOPNOTSUPP, EMLINK:
                let placeholder = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                if placeholder < 0 && errno == EEXIST { continue }
                guard placeholder >= 0 else { throw failure("create \(path)") }
                close(placeholder)
                guard rename(part, path) == 0 else {
                    let error = failure("rename \(part) to \(path)")
                    _ = unlink(path)
                    throw error
                }
                return path
            default:
                throw failure("link \(part) to \(path)")
            }
        }
        throw ClientFailure(.localFile, "\(destination.candidate(number, name: name) ?? part) appeared while "
                            + "downloading; the verified file is kept as \(part): run again with --force to replace "
                            + "it, or with another --output")
    }
}
