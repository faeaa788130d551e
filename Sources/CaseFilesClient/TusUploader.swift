import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import CaseFilesCore

/// Uploads one file over tus 1.0, resuming by itself: the upload URL and the file's identity (path,
/// size, modification time, SHA-256) are kept in an `UploadStateStore`, so running the same command
/// again after Ctrl-C, a crash or a reboot asks the server for the offset and sends only the rest.
/// Chunk sizes adapt to the rate (`ChunkSizer`) unless fixed. Two chunks are in use at a time: the one being
/// sent, and the next, read and hashed meanwhile (`FileWork`: off the threads that start the sends); their
/// buffers are reused (`ChunkBuffers`), and two more may wait for the HTTP client to let go of them.
public struct TusUploader: Sendable {
    public let client: CaseFilesClient
    public let chunkSizer: ChunkSizer
    public let store: UploadStateStore
    public let quiet: Bool
    /// Whether chunks go gzip-compressed (`Content-Encoding: gzip`, the server's `casefiles-content-encoding`).
    public let compress: CompressMode

    /// - Parameter chunkSizer: `.adaptive` (the default) or `.fixed(bytes)`; compress: `.auto` decides from the
    ///   file's first 64 KiB (`ChunkCompression.looksCompressible`).
    public init(client: CaseFilesClient, chunkSizer: ChunkSizer = .adaptive, store: UploadStateStore = .init(),
                quiet: Bool = false, compress: CompressMode = .off) {
        self.client = client
        self.compress = compress
        self.chunkSizer = chunkSizer
        self.store = store
        self.quiet = quiet
    }

    public struct Result: Sendable {
        public var attachmentID: String
        public var sha256: String
        public var size: Int64
        public var resumedFrom: Int64
        /// Bytes of the file sent (read and sent, resent chunks included).
        public var bytesSent: Int64
        /// Bytes of request bodies sent: `bytesSent` after compression.
        public var bodyBytesSent: Int64
        public var compressed: Bool
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
        if let known = entry, known.size != identity.size || known.modifiedNanoseconds != identity.modifiedNanoseconds
            || known.partURLs != nil {  // an upload in parallel partials (`upload(path:caseNumber:streams:)`)
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
    private struct RunningDigest: Sendable {
        var digest = SHA256Digest()
        var upTo: Int64 = 0

        /// `extend(with:)` on the blocking pool (`FileWork`), so the cooperative threads stay free for the send.
        func extended(with chunk: PreparedChunk) async throws -> RunningDigest {
            try await FileWork.run { [self] in
                var copy = self
                copy.extend(with: chunk)
                return copy
            }
        }

        /// Extends the digest with `chunk` if it is the file's next bytes (a chunk sent again is not).
        mutating func extend(with chunk: PreparedChunk) {
            guard chunk.offset == upTo else { return }
            digest.update(chunk.bytes)
            upTo += Int64(chunk.bytes.readableBytes)
        }

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
    func checkCaseAcceptsUploads(_ caseNumber: String) async throws {
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
    func serverOffset(_ url: String) async throws -> Int64? {
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

    /// One chunk read from the file, with its `Upload-Checksum` computed: prepared while the chunk before it
    /// is on its way.
    struct PreparedChunk: Sendable {
        var offset: Int64
        /// The file's bytes (what the server stores, and the whole-file digest covers).
        var bytes: ByteBuffer
        /// The request body: `bytes`, or their gzip stream when `coding` is set.
        var body: ByteBuffer
        var coding: ContentCoding?
        /// `Upload-Checksum`, over `body` (the bytes as sent).
        var checksum: String
    }

    /// Fills `target` with the file's bytes at `offset` (pread: no shared file position, so reads can run at once).
    /// - Throws: `ClientFailure(.localFile)` when the file cannot be read or ends before `target` is full.
    static func read(_ fd: Int32, into target: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < target.count {
            let n = pread(fd, target.baseAddress! + done, target.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw ClientFailure(.localFile, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            guard n > 0 else { throw ClientFailure(.localFile, "\(path) is shorter than expected") }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` (`read`) into a buffer from `buffers`, compresses
    /// them when `compress` says so and the chunk stays under `ChunkCompression.maxRatio`, and hashes the body.
    /// Hand the chunk's `bytes` back to `buffers` once it is done.
    static func prepare(fd: Int32, offset: Int64, count: Int, path: String, compress: Bool = false,
                        buffers: ChunkBuffers) throws -> PreparedChunk {
        var bytes = buffers.take(capacity: count)
        try bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            try read(fd, into: UnsafeMutableRawBufferPointer(rebasing: target[0..<count]), at: offset, path: path)
            return count
        }
        var body = bytes
        var coding: ContentCoding?
        if compress && count > 0 {
            let encoded = bytes.withUnsafeReadableBytes { ChunkCompression.compress($0, coding: .gzip) }
            // Worth sending only if smaller, and never past the ratio the server refuses as a bomb.
            if encoded.readableBytes < count && encoded.readableBytes * ChunkCompression.maxRatio >= count {
                body = encoded
                coding = .gzip
            }
        }
        let checksum = body.withUnsafeReadableBytes { raw -> String in
            var digest = SHA256Digest()
            digest.update(raw)
            return "sha256 " + Data(digest.finalize()).base64EncodedString()
        }
        return PreparedChunk(offset: offset, bytes: bytes, body: body, coding: coding, checksum: checksum)
    }

    /// Sends the file from `start`, one PATCH at a time (tus appends are sequential), keeping the disk, both
    /// digests and the connection busy at once: while a chunk is sent, the next is read and hashed (a task
    /// of its own) and the sent one extends the whole-file digest.
    private func send(_ entry: UploadStateStore.Entry, from start: Int64, handle: FileHandle, identity: FileIdentity,
                      rawPath: String) async throws -> Result {
        var offset = start
        var sent: Int64 = 0
        var bodySent: Int64 = 0
        let compressing = try decideCompression(fd: handle.fileDescriptor, size: identity.size, path: rawPath)
        var checksumFailures = 0
        var whole = RunningDigest()
        var fileSHA256 = entry.sha256
        var sizer = chunkSizer
        let fd = handle.fileDescriptor
        let buffers = ChunkBuffers(retained: 2)
        let progress = TransferProgress(label: "uploading", total: identity.size, startingAt: start, quiet: quiet)
        progress.update(offset, force: true)
        func prepare(at offset: Int64, size: Int) -> Task<PreparedChunk, any Error> {
            let count = Int(min(Int64(size), identity.size - offset))
            return Task {
                try await FileWork.run {
                    try Self.prepare(fd: fd, offset: offset, count: count, path: rawPath, compress: compressing, buffers: buffers)
                }
            }
        }
        var upcoming: Task<PreparedChunk, any Error>?
        do {
        while offset < identity.size {
            guard try Self.identity(of: entry.path) == identity else {
                throw ClientFailure(.localFile, "\(rawPath) changed during the upload; run the command again to start over")
            }
            if entry.sha256 == nil { try whole.advance(to: offset, handle: handle, path: rawPath) }
            var chunk = try await (upcoming ?? prepare(at: offset, size: sizer.size)).value
            upcoming = nil
            // Read while the previous chunk was sent, so at the size chosen before its rate was known: a chunk at
            // another offset (the server's offset moved), or larger than the link now wants, is read again.
            if chunk.offset != offset || chunk.bytes.readableBytes > sizer.size {
                buffers.give(chunk.bytes)
                chunk = try await prepare(at: offset, size: sizer.size).value
            }
            let count = Int64(chunk.bytes.readableBytes)
            var headers = [("Upload-Offset", String(offset)), ("Content-Type", TusProtocol.contentType),
                           ("Upload-Checksum", chunk.checksum)]
            if let coding = chunk.coding { headers.append(("Content-Encoding", coding.rawValue)) }
            let isLast = offset + count == identity.size
            if entry.sha256 == nil && isLast {
                // The last chunk declares the whole file's SHA-256: the server completes the upload only if
                // the bytes it stored have it (422 otherwise).
                whole = try await whole.extended(with: chunk)
                let final = whole.digest.finalize()
                fileSHA256 = final.hexString
                headers.append(("Repr-Digest", "sha-256=:\(Data(final).base64EncodedString()):"))
            }
            if !isLast { upcoming = prepare(at: offset + count, size: sizer.size) }
            let at = offset
            let (fields, body) = (headers, chunk.body)
            let sendStarted = ContinuousClock.now
            async let answer = client.send("sending bytes \(at)-\(at + count - 1)") {
                var request = client.request(entry.uploadURL, method: .PATCH, headers: fields, tus: true)
                request.body = .bytes(body)
                return request
            }
            // The chunk on its way extends the whole-file digest meanwhile; it is never read from the file again.
            if entry.sha256 == nil && !isLast { whole = try await whole.extended(with: chunk) }
            let reply = try await answer
            sent += count
            bodySent += Int64(chunk.body.readableBytes)
            buffers.give(chunk.bytes)  // sent, answered and hashed: the chunk after next is read into it
            switch reply.status {
            case 204:
                guard let next = reply.headers.first(name: "Upload-Offset").flatMap(WireFormat.parseCount), next > offset,
                      next <= identity.size
                else {
                    throw ClientFailure(.refused, "the server's PATCH answer had no valid Upload-Offset")
                }
                let took = ContinuousClock.now - sendStarted
                sizer.record(bytes: Int(count), seconds: took / .seconds(1))
                offset = next
                checksumFailures = 0
            case 409:
                // The offset moved under us (an earlier attempt landed after all): ask and continue from there.
                guard let next = try await serverOffset(entry.uploadURL) else {
                    throw ClientFailure(.refused, "the upload disappeared from the server: \(reply.errorText)")
                }
                guard next <= identity.size else {
                    throw ClientFailure(.refused, "the server's offset \(next) is past the file's \(identity.size) bytes")
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
            progress.update(offset, sent: compressing ? bodySent : nil)
        }
        // The server can report the end before the chunk read meanwhile was sent (a 409 after a lost answer).
        _ = try? await upcoming?.value
        } catch {
            // The next chunk's read must be over before the caller closes the file it reads.
            _ = try? await upcoming?.value
            throw error
        }
        progress.update(offset, sent: compressing ? bodySent : nil, force: true)
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
        return Result(attachmentID: id, sha256: sha256, size: identity.size, resumedFrom: start, bytesSent: sent,
                      bodyBytesSent: bodySent, compressed: compressing)
    }

    /// `--compress`: on, off, or (auto) whether the file's first `ChunkCompression.sampleSize` bytes look
    /// compressible (not a compressed format's signature, low byte entropy).
    private func decideCompression(fd: Int32, size: Int64, path: String) throws -> Bool {
        switch compress {
        case .on: return true
        case .off: return false
        case .auto:
            let count = Int(min(Int64(ChunkCompression.sampleSize), size))
            var sample = [UInt8](repeating: 0, count: count)
            let read = sample.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, 0) }
            guard read >= 0 else { throw ClientFailure(.localFile, "cannot read \(path): \(String(cString: strerror(errno)))") }
            return sample.withUnsafeBytes { ChunkCompression.looksCompressible(UnsafeRawBufferPointer(rebasing: $0[0..<read])) }
        }
    }
}
