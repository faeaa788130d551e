import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import CaseFilesCore

/// Uploads one file over tus 1.0, resuming by itself: the upload URL and the file's identity (path,
/// size, modification time, SHA-256) are kept in an `UploadStateStore`, so running the same command
/// again after Ctrl-C, a crash or a reboot asks the server for the offset and sends only the rest.
/// At most one chunk is in memory.
public struct TusUploader: Sendable {
    public let client: CaseFilesClient
    public let chunkSize: Int
    public let store: UploadStateStore
    public let quiet: Bool

    public init(client: CaseFilesClient, chunkSize: Int = 8 << 20, store: UploadStateStore = .init(), quiet: Bool = false) {
        self.client = client
        self.chunkSize = chunkSize
        self.store = store
        self.quiet = quiet
    }

    public struct Result: Sendable {
        public var attachmentID: String
        public var sha256: String
        public var size: Int64
        public var resumedFrom: Int64
        public var bytesSent: Int64
    }

    package struct FileIdentity: Equatable {
        package var size: Int64
        package var modifiedNanoseconds: Int64
    }

    package static func identity(of path: String) throws -> FileIdentity {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ClientFailure(.localFile, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw ClientFailure(.localFile, "\(path) is not a regular file") }
        return FileIdentity(size: Int64(info.st_size),
                            modifiedNanoseconds: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
    }

    package func say(_ text: String) {
        if !quiet { print(text) }
    }

    public func upload(path rawPath: String, caseNumber: String) async throws -> Result {
        let path = URL(fileURLWithPath: rawPath).standardizedFileURL.path
        let identity = try Self.identity(of: path)
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ClientFailure(.localFile, "cannot open \(path)")
        }
        defer { try? handle.close() }

        var entry = store.load(server: client.server, caseNumber: caseNumber, path: path)
        if let known = entry, known.size != identity.size || known.modifiedNanoseconds != identity.modifiedNanoseconds {
            say("\(rawPath) changed since the last attempt (size or modification time differ): starting a new upload")
            store.remove(server: client.server, caseNumber: caseNumber, path: path)
            entry = nil
        }

        for _ in 0..<2 {  // a second round only if the remembered upload turned out to be gone
            let current: UploadStateStore.Entry
            if let entry {
                current = entry
            } else {
                current = try await create(path: path, caseNumber: caseNumber, identity: identity, handle: handle)
                try store.save(current)
            }
            guard let offset = try await serverOffset(current.uploadURL) else {
                say("the server no longer has the earlier upload of \(rawPath): starting a new one")
                store.remove(server: client.server, caseNumber: caseNumber, path: path)
                entry = nil
                continue
            }
            if entry != nil && offset > 0 { say("resuming \(rawPath) at byte \(offset) of \(identity.size)") }
            let result = try await send(current, from: offset, handle: handle, identity: identity, rawPath: rawPath)
            store.remove(server: client.server, caseNumber: caseNumber, path: path)
            return result
        }
        throw ClientFailure(.refused, "the server lost the upload of \(rawPath) twice")
    }

    /// Creates the upload. The file is not read here: its SHA-256 is computed as the chunks are sent and
    /// declared with the last one (RFC 9530 `Repr-Digest`, which the server checks before the upload completes),
    /// so a fresh upload reads the file once.
    private func create(path: String, caseNumber: String, identity: FileIdentity, handle: FileHandle) async throws
        -> UploadStateStore.Entry
    {
        try await checkCaseAcceptsUploads(caseNumber)
        let name = URL(fileURLWithPath: path).lastPathComponent
        let metadata = "filename \(Data(name.utf8).base64EncodedString())"
        let reply = try await client.send("creating the upload") {
            client.request("/api/v1/cases/\(caseNumber)/uploads", method: .POST,
                           headers: [("Upload-Length", String(identity.size)), ("Upload-Metadata", metadata)], tus: true)
        }
        guard reply.status == 201, let location = reply.headers.first(name: "Location") else {
            throw ClientFailure(.refused, "creating the upload of \(name) failed: \(reply.errorText)")
        }
        return UploadStateStore.Entry(
            server: client.server, caseNumber: caseNumber, path: path, size: identity.size,
            modifiedNanoseconds: identity.modifiedNanoseconds, sha256: nil,
            uploadURL: location.hasPrefix("http") ? location : client.server + location)
    }

    /// The whole file's SHA-256 as it is sent: a running digest over bytes [0, `upTo`), advanced by reading
    /// only what was not hashed yet (on a resume, the part the server already has, once).
    private struct RunningDigest {
        var digest = SHA256Digest()
        var upTo: Int64 = 0

        mutating func advance(to target: Int64, handle: FileHandle, path: String) throws {
            guard target > upTo else { return }
            try handle.seek(toOffset: UInt64(upTo))
            while upTo < target {
                let data = try handle.read(upToCount: Int(min(8 << 20, target - upTo))) ?? Data()
                guard !data.isEmpty else { throw ClientFailure(.localFile, "\(path) is shorter than expected") }
                digest.update(data)
                upTo += Int64(data.count)
            }
        }
    }

    /// Asks first, so that a bad token, an unknown case or a closed case is reported before a large file
    /// has been read end to end for its digest.
    private func checkCaseAcceptsUploads(_ caseNumber: String) async throws {
        struct CaseState: Decodable {
            var number: String
            var status: String
        }
        let found = try await client.json(CaseState.self, "checking case \(caseNumber)", "/api/v1/cases/\(caseNumber)")
        guard found.status != "Closed" else {
            throw ClientFailure(.refused, "case_closed: case \(found.number) is closed, so it accepts no uploads. "
                                + "Ask for it to be reopened (possible for a while after closure) or open a new case.")
        }
    }

    /// The committed offset (HEAD), or nil if the server no longer has the upload.
    private func serverOffset(_ url: String) async throws -> Int64? {
        let reply = try await client.send("asking for the offset") { client.request(url, method: .HEAD, tus: true) }
        switch reply.status {
        case 200:
            guard let offset = reply.headers.first(name: "Upload-Offset").flatMap(WireFormat.parseCount) else {
                throw ClientFailure(.refused, "the server's HEAD answer had no valid Upload-Offset")
            }
            return offset
        case 404, 410: return nil
        default: throw ClientFailure(.refused, "asking for the offset failed: \(reply.errorText)")
        }
    }

    private func send(_ entry: UploadStateStore.Entry, from start: Int64, handle: FileHandle, identity: FileIdentity,
                      rawPath: String) async throws -> Result {
        var offset = start
        var sent: Int64 = 0
        var checksumFailures = 0
        var whole = RunningDigest()
        var fileSHA256 = entry.sha256
        let progress = TransferProgress(label: "uploading", total: identity.size, startingAt: start, quiet: quiet)
        progress.update(offset, force: true)
        while offset < identity.size {
            guard try Self.identity(of: entry.path) == identity else {
                throw ClientFailure(.localFile, "\(rawPath) changed during the upload; run the command again to start over")
            }
            if entry.sha256 == nil { try whole.advance(to: offset, handle: handle, path: rawPath) }
            try handle.seek(toOffset: UInt64(offset))
            let chunk = try handle.read(upToCount: Int(min(Int64(chunkSize), identity.size - offset))) ?? Data()
            guard !chunk.isEmpty else { throw ClientFailure(.localFile, "\(rawPath) is shorter than \(identity.size) bytes") }
            let checksum = "sha256 " + Data(SHA256Digest.hash(chunk)).base64EncodedString()
            var headers = [("Upload-Offset", String(offset)), ("Content-Type", TusProtocol.contentType),
                           ("Upload-Checksum", checksum)]
            if entry.sha256 == nil && offset + Int64(chunk.count) == identity.size {
                // The last chunk declares the whole file's SHA-256: the server completes the upload only if
                // the bytes it stored have it (422 otherwise).
                var last = whole
                last.digest.update(chunk)
                let final = last.digest.finalize()
                fileSHA256 = final.hexString
                headers.append(("Repr-Digest", "sha-256=:\(Data(final).base64EncodedString()):"))
            }
            let buffer = ByteBuffer(data: chunk)
            let at = offset
            let fields = headers
            let reply = try await client.send("sending bytes \(at)-\(at + Int64(chunk.count) - 1)") {
                var request = client.request(entry.uploadURL, method: .PATCH, headers: fields, tus: true)
                request.body = .bytes(buffer)
                return request
            }
            sent += Int64(chunk.count)
            switch reply.status {
            case 204:
                guard let next = reply.headers.first(name: "Upload-Offset").flatMap(WireFormat.parseCount), next > offset else {
                    throw ClientFailure(.refused, "the server's PATCH answer had no valid Upload-Offset")
                }
                // The chunk in memory extends the whole-file digest, so it is never read from the file again.
                if entry.sha256 == nil, whole.upTo == offset, next == offset + Int64(chunk.count) {
                    whole.digest.update(chunk)
                    whole.upTo = next
                }
                offset = next
                checksumFailures = 0
            case 409:
                // The offset moved under us (an earlier attempt landed after all): ask and continue from there.
                guard let next = try await serverOffset(entry.uploadURL) else {
                    throw ClientFailure(.refused, "the upload disappeared from the server: \(reply.errorText)")
                }
                offset = next
            case 460:
                checksumFailures += 1
                guard checksumFailures < 2 else {
                    throw ClientFailure(.integrity, "the chunk at \(offset) failed its SHA-256 check twice: \(reply.errorText)")
                }
            case 422:
                store.remove(server: entry.server, caseNumber: entry.caseNumber, path: entry.path)
                throw ClientFailure(.integrity, "the server rejected the file: \(reply.errorText)")
            default:
                if reply.status == 410 || reply.status == 404 {
                    store.remove(server: entry.server, caseNumber: entry.caseNumber, path: entry.path)
                }
                throw ClientFailure(.refused, "the server refused the upload: \(reply.errorText)")
            }
            progress.update(offset)
        }
        progress.update(offset, force: true)
        progress.finish()
        let id = String(entry.uploadURL.split(separator: "/").last ?? "")
        let attachment = try await client.attachment(id: id)
        if fileSHA256 == nil {  // finished by an earlier attempt whose answer was lost: hash what is left
            try whole.advance(to: identity.size, handle: handle, path: rawPath)
            fileSHA256 = whole.digest.finalize().hexString
        }
        guard let sha256 = fileSHA256, attachment.sha256 == sha256 else {
            throw ClientFailure(.integrity, "the server recorded SHA-256 \(attachment.sha256 ?? "none"), the file's is \(fileSHA256 ?? "unknown")")
        }
        return Result(attachmentID: id, sha256: sha256, size: identity.size, resumedFrom: start, bytesSent: sent)
    }
}
