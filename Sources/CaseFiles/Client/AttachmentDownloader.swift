import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Downloads an attachment to `PATH.part`, resuming with `Range` + `If-Range` after interruptions,
/// and renames it into place only when its SHA-256 matches the server's `Repr-Digest`.
public struct AttachmentDownloader: Sendable {
    public let client: CaseFilesClient
    public let quiet: Bool

    public init(client: CaseFilesClient, quiet: Bool = false) {
        self.client = client
        self.quiet = quiet
    }

    public struct Result: Sendable {
        public var path: String
        public var sha256: String
        public var size: Int64
        public var bytesReceived: Int64
    }

    /// - Parameter output: a file path, a directory, or nil for the attachment's own name here.
    public func download(id: String, to output: String?) async throws -> Result {
        let attachment = try await client.attachment(id: id)
        guard let expected = attachment.sha256 else { throw ClientFailure(.refused, "attachment \(id) has no SHA-256") }
        let target = Self.target(output, filename: attachment.filename)
        let part = target + ".part"
        if !FileManager.default.fileExists(atPath: part) {
            guard FileManager.default.createFile(atPath: part, contents: nil) else {
                throw ClientFailure(.localFile, "cannot create \(part)")
            }
        }
        guard let handle = FileHandle(forUpdatingAtPath: part) else { throw ClientFailure(.localFile, "cannot open \(part)") }
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
            throw ClientFailure(.integrity, "the download of \(attachment.filename) has SHA-256 \(actual), the server "
                                + "declares \(serverDigest ?? "nothing") and recorded \(expected); the partial file was deleted")
        }
        try handle.synchronize()
        guard rename(part, target) == 0 else {
            throw ClientFailure(.localFile, "cannot rename \(part) to \(target): \(String(cString: strerror(errno)))")
        }
        return Result(path: target, sha256: actual, size: have, bytesReceived: received)
    }

    /// `Repr-Digest: sha-256=:…:` as hex.
    static func reprDigest(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "Repr-Digest").flatMap { try? TusHeaders.parseReprDigest($0) }
    }

    /// Where to write: `output` if it is a file path, inside it if it is a directory, else the
    /// attachment's own name (its last path component only) in the current directory.
    static func target(_ output: String?, filename: String) -> String {
        let safeName = URL(fileURLWithPath: filename).lastPathComponent
        guard let output else { return safeName }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory), isDirectory.boolValue {
            return URL(fileURLWithPath: output).appendingPathComponent(safeName).path
        }
        return output
    }
}
