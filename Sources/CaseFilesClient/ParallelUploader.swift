import AsyncHTTPClient
import Foundation
import NIOCore
import CaseFilesCore

/// `casefiles upload --parallel N` (tus concatenation): the file is cut into N contiguous parts, each sent as a
/// partial upload on a connection of its own (each resumes by itself: every partial's URL is in the state file),
/// then one final upload names them in order with the whole file's SHA-256, and the client waits for the server to
/// verify it (HEAD until `Upload-Offset` appears).
///
/// The whole file's SHA-256 needs the bytes in file order, which N streams do not send in: it is computed by a
/// second, sequential read of the file, running alongside the sends (the parts' chunks are read by pread, so the
/// two reads share the page cache rather than the disk, as a rule). That second read is the one cost over a single
/// stream, which hashes the chunks as it sends them.
extension TusUploader {
    /// Parts smaller than this are not worth a connection of their own.
    static let minimumPartSize: Int64 = 1 << 20

    /// How often the final upload's verification is polled (HEAD).
    static let verificationPoll: Duration = .milliseconds(250)

    public func upload(path rawPath: String, caseNumber: String, streams requested: Int) async throws -> Result {
        let path = URL(fileURLWithPath: rawPath).standardizedFileURL.path
        let identity = try Self.identity(of: path)
        let streams = Int(min(Int64(requested), max(1, identity.size / Self.minimumPartSize)))
        guard streams > 1 else { return try await upload(path: rawPath, caseNumber: caseNumber) }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ClientFailure(.localFile, "cannot open \(path)") }
        defer { try? handle.close() }
        let parts = Self.parts(size: identity.size, count: streams)

        var entry = store.load(server: client.server, caseNumber: caseNumber, path: path)
        if let known = entry, known.size != identity.size || known.modifiedNanoseconds != identity.modifiedNanoseconds
            || known.partURLs?.count != streams {
            say("\(rawPath) changed, or was sent in another number of parts, since the last attempt: starting a new upload")
            store.remove(server: client.server, caseNumber: caseNumber, path: path)
            entry = nil
        }
        var current: UploadStateStore.Entry
        if let entry {
            current = entry
            say("resuming \(rawPath) in \(streams) parts")
        } else {
            try await checkCaseAcceptsUploads(caseNumber)
            let name = URL(fileURLWithPath: path).lastPathComponent
            var urls: [String] = []
            for (index, part) in parts.enumerated() {
                urls.append(try await createPartial(name: "\(name).part\(index + 1)", length: Int64(part.count), caseNumber: caseNumber))
            }
            current = UploadStateStore.Entry(server: client.server, caseNumber: caseNumber, path: path, size: identity.size,
                                             modifiedNanoseconds: identity.modifiedNanoseconds, sha256: nil, uploadURL: "",
                                             partURLs: urls)
            try store.save(current)
        }

        // The whole file's SHA-256, in order, alongside the sends (see above).
        let fd = handle.fileDescriptor
        let wholeFile = Task { try await Self.sha256(fd: fd, size: identity.size, path: rawPath) }
        let buffers = ChunkBuffers(retained: 2)
        let progress = TransferProgress(label: "uploading", total: identity.size, startingAt: 0, quiet: quiet)
        let done = Tally()
        var sent: Int64 = 0
        do {
            if current.uploadURL.isEmpty {
                sent = try await withThrowingTaskGroup(of: Int64.self) { group in
                    for (url, part) in zip(current.partURLs ?? [], parts) {
                        group.addTask {
                            try await self.sendPart(url, part: part, fd: fd, buffers: buffers, path: path, identity: identity,
                                                    rawPath: rawPath, progress: progress, done: done)
                        }
                    }
                    return try await group.reduce(0, +)
                }
            }
        } catch {
            wholeFile.cancel()
            _ = try? await wholeFile.value  // its reads must end before the file is closed
            if let failure = error as? ClientFailure, failure.kind == .refused || failure.kind == .integrity {
                store.remove(server: client.server, caseNumber: caseNumber, path: path)
            }
            throw error
        }
        progress.update(identity.size, force: true)
        progress.finish()
        let sha256 = try await wholeFile.value
        if current.uploadURL.isEmpty {
            current.uploadURL = try await createFinal(current, filename: URL(fileURLWithPath: path).lastPathComponent, sha256: sha256)
            try store.save(current)
        }
        try await waitForVerification(current.uploadURL, rawPath: rawPath)
        store.remove(server: client.server, caseNumber: caseNumber, path: path)
        let id = String(current.uploadURL.split(separator: "/").last ?? "")
        let attachment = try await client.attachment(id: id)
        guard attachment.sha256 == sha256 else {
            throw ClientFailure(.integrity, "the server recorded SHA-256 \(attachment.sha256 ?? "none"), the file's is \(sha256)")
        }
        // Parallel parts go uncompressed (each partial is its own tus upload; --compress applies to one stream).
        return Result(attachmentID: id, sha256: sha256, size: identity.size, resumedFrom: 0, bytesSent: sent,
                      bodyBytesSent: sent, compressed: false)
    }

    /// N contiguous ranges covering [0, size), the first ones one byte longer when N does not divide size.
    package static func parts(size: Int64, count: Int) -> [Range<Int64>] {
        let base = size / Int64(count), extra = size % Int64(count)
        var start: Int64 = 0
        return (0..<count).map { index in
            let length = base + (Int64(index) < extra ? 1 : 0)
            defer { start += length }
            return start..<(start + length)
        }
    }

    private func createPartial(name: String, length: Int64, caseNumber: String) async throws -> String {
        let metadata = "filename \(Data(name.utf8).base64EncodedString())"
        let reply = try await client.send("creating a partial upload") {
            client.request("/api/v1/cases/\(caseNumber)/uploads", method: .POST, headers: [
                ("Upload-Length", String(length)), ("Upload-Metadata", metadata), ("Upload-Concat", "partial"),
            ], tus: true)
        }
        guard reply.status == 201, let location = reply.headers.first(name: "Location") else {
            throw ClientFailure(.refused, "creating a partial upload failed: \(reply.errorText)")
        }
        return location.hasPrefix("http") ? location : client.server + location
    }

    private func createFinal(_ entry: UploadStateStore.Entry, filename: String, sha256: String) async throws -> String {
        let metadata = "filename \(Data(filename.utf8).base64EncodedString())"
        let digest = Data([UInt8](hex: sha256, byteCount: SHA256Digest.byteCount) ?? []).base64EncodedString()
        let concat = "final;" + (entry.partURLs ?? []).joined(separator: " ")
        let reply = try await client.send("creating the final upload") {
            client.request("/api/v1/cases/\(entry.caseNumber)/uploads", method: .POST, headers: [
                ("Upload-Concat", concat), ("Upload-Metadata", metadata), ("Repr-Digest", "sha-256=:\(digest):"),
            ], tus: true)
        }
        guard reply.status == 201, let location = reply.headers.first(name: "Location") else {
            throw ClientFailure(.refused, "creating the final upload of \(filename) failed: \(reply.errorText)")
        }
        return location.hasPrefix("http") ? location : client.server + location
    }

    /// HEAD on the final upload until `Upload-Offset` appears (verified); 410 if its SHA-256 did not match.
    private func waitForVerification(_ url: String, rawPath: String) async throws {
        while true {
            let reply = try await client.send("asking how far verification got") { client.request(url, method: .HEAD, tus: true) }
            switch reply.status {
            case 200 where reply.headers.first(name: "Upload-Offset") != nil: return
            case 200: try await Task.sleep(for: Self.verificationPoll)
            case 410: throw ClientFailure(.integrity, "the server rejected \(rawPath): its parts do not have the file's SHA-256")
            default: throw ClientFailure(.refused, "asking for the final upload failed: \(reply.errorText)")
            }
        }
    }

    /// Sends one part from the partial upload's committed offset, one chunk at a time, as `send` does for a whole
    /// file; returns the bytes sent. A 409 asks for the offset again; a chunk failing its checksum twice stops.
    private func sendPart(_ url: String, part: Range<Int64>, fd: Int32, buffers: ChunkBuffers, path: String,
                          identity: FileIdentity, rawPath: String, progress: TransferProgress, done: Tally) async throws -> Int64 {
        guard var offset = try await serverOffset(url) else {
            throw ClientFailure(.refused, "the server no longer has a part of \(rawPath); run the command again to start over")
        }
        let length = Int64(part.count)
        progress.update(done.add(offset))
        var sizer = chunkSizer
        var sent: Int64 = 0
        var checksumFailures = 0
        while offset < length {
            guard try Self.identity(of: path) == identity else {
                throw ClientFailure(.localFile, "\(rawPath) changed during the upload; run the command again to start over")
            }
            let count = Int(min(Int64(sizer.size), length - offset))
            let at = offset
            let chunk = try await FileWork.run {
                try Self.prepare(fd: fd, offset: part.lowerBound + at, count: count, path: rawPath, buffers: buffers)
            }
            let headers = [("Upload-Offset", String(offset)), ("Content-Type", TusProtocol.contentType),
                           ("Upload-Checksum", chunk.checksum)]
            let started = ContinuousClock.now
            let reply = try await client.send("sending bytes \(part.lowerBound + at)-\(part.lowerBound + at + Int64(count) - 1)") {
                var request = client.request(url, method: .PATCH, headers: headers, tus: true)
                request.body = .bytes(chunk.bytes)
                return request
            }
            sent += Int64(count)
            buffers.give(chunk.bytes)
            switch reply.status {
            case 204:
                guard let next = reply.headers.first(name: "Upload-Offset").flatMap(WireFormat.parseCount), next > offset,
                      next <= length
                else {
                    throw ClientFailure(.refused, "the server's PATCH answer had no valid Upload-Offset")
                }
                sizer.record(bytes: count, seconds: (ContinuousClock.now - started) / .seconds(1))
                progress.update(done.add(next - offset))
                offset = next
                checksumFailures = 0
            case 409:
                guard let next = try await serverOffset(url) else {
                    throw ClientFailure(.refused, "a part of \(rawPath) disappeared from the server: \(reply.errorText)")
                }
                guard next <= length else {
                    throw ClientFailure(.refused, "the server's offset \(next) is past the part's \(length) bytes")
                }
                progress.update(done.add(next - offset))
                offset = next
            case 460:
                checksumFailures += 1
                guard checksumFailures < 2 else {
                    throw ClientFailure(.integrity, "a chunk failed its SHA-256 check twice: \(reply.errorText)")
                }
            default:
                throw ClientFailure(.refused, "the server refused a part of \(rawPath): \(reply.errorText)")
            }
        }
        return sent
    }

    /// The file's SHA-256, read in order with pread (no shared file position), 8 MiB at a time, each step its
    /// own `FileWork` job: the pool's threads (one per core, fewer under a CPU quota) are not held for the whole
    /// file while the parts' chunks wait for one. Stops between steps once its task is cancelled.
    private static func sha256(fd: Int32, size: Int64, path: String) async throws -> String {
        var digest = SHA256Digest()
        var offset: Int64 = 0
        let step = 8 << 20
        while offset < size {
            try Task.checkCancellation()
            let (at, count, before) = (offset, Int(min(Int64(step), size - offset)), digest)
            (digest, offset) = try await FileWork.run {
                var digest = before
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
                defer { buffer.deallocate() }
                try read(fd, into: buffer, at: at, path: path)
                digest.update(UnsafeRawBufferPointer(buffer))
                return (digest, at + Int64(count))
            }
        }
        return digest.finalize().hexString
    }
}

/// Bytes committed across the parts, for the one progress line.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var total: Int64 = 0

    /// Adds `count` and returns the new total.
    func add(_ count: Int64) -> Int64 { lock.withLock { total += count; return total } }
}
