import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle
import CaseFilesBundles
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// Inside archive attachments (issue #21): the index's listing, and one entry's bytes read from the archive
/// in place (`BundleEntryReader`), with the same permissions, headers and access log as a whole download
/// (`AttachmentsController`).
struct EntriesController: Sendable {
    let services: AppServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("attachments/:id/entries", use: list)
        group.get("attachments/:id/entries/**", use: content)
    }

    // MARK: - Listing

    struct Entry: Codable, Sendable {
        var number: Int
        var path: String
        var size: Int64
        var modifiedAt: Date?
        var type: String
        var linkTarget: String?
        var readable: Bool
        var problem: String?
        var sha256: String?
        var flags: [String]

        init(_ entry: BundleEntry) {
            number = entry.number
            path = entry.path
            size = entry.size
            modifiedAt = entry.modifiedAt
            type = entry.type.rawValue
            linkTarget = entry.linkTarget
            readable = entry.readable
            problem = entry.problem
            sha256 = entry.sha256
            flags = entry.flags
        }
    }

    struct Listing: ResponseEncodable {
        var state: String
        var format: String?
        var reason: String?
        var entryCount: Int
        var truncated: Bool
        var stoppedAt: Int64?
        var checkpointSpacing: Int64?
        /// What the index costs, in bytes counted toward the case's quota.
        var indexBytes: Int64
        var entries: [Entry]
        var next: String?
    }

    /// `GET …/entries[?prefix=P&limit=N&after=CURSOR]`: the index's state, and one page of entries by number
    /// (the cursor is the last entry's number), only those whose path starts with `prefix`.
    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let upload = try await AttachmentsController.verifiedAttachment(
            context, user: try context.requireUser(), database: services.database)
        let page = try PageQuery(request) { Int($0).map { $0 >= 0 } ?? false }
        let prefix = request.uri.queryParameters["prefix"].map(String.init)
        let index = try await services.database.bundleIndex(attachmentID: upload.id)
            ?? BundleIndex(attachmentID: upload.id, state: .pending, updatedAt: services.now())
        var entries: [BundleEntry] = []
        if index.state == .ready {
            entries = try await services.database.bundleEntries(
                attachmentID: upload.id, prefix: prefix, after: page.after.flatMap { Int($0) }, limit: page.limit + 1)
        }
        let (rows, next) = page.page(entries) { String($0.number) }
        let listing = Listing(
            state: index.state.rawValue, format: index.format?.rawValue, reason: index.reason,
            entryCount: index.entryCount, truncated: index.truncated, stoppedAt: index.stoppedAt,
            checkpointSpacing: index.checkpointSpacing, indexBytes: index.indexBytes, entries: rows.map(Entry.init),
            next: next)
        var response = try listing.response(from: request, context: context)
        let path = "/api/v1/attachments/\(upload.id)/entries"
        for field in page.headers(path: path, next: next) { response.headers.append(field) }
        return response
    }

    // MARK: - One entry's bytes

    /// `GET …/entries/{path}[?n=K]`: the entry's bytes, `Range` honoured, `Repr-Digest` up front, and
    /// `CaseFiles-Inflated-Bytes`: the decompressed bytes this response inflates (0 for stored data).
    @Sendable func content(_ request: Request, context: AppRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let upload = try await AttachmentsController.verifiedAttachment(context, user: user, database: services.database)
        guard let index = try await services.database.bundleIndex(attachmentID: upload.id), index.state == .ready,
              let format = index.format else {
            let index = try await services.database.bundleIndex(attachmentID: upload.id)
            throw APIError.indexNotReady(index?.state ?? .pending, reason: index?.reason)
        }
        let path = try Self.entryPath(request, attachmentID: upload.id)
        let entry = try await pick(upload.id, path: path, number: request.uri.queryParameters["n"].map(String.init))
        switch entry.type {
        case .file: break
        case .directory: throw APIError.entryNotReadable(entry.number, "it is a directory")
        case .symlink, .hardlink:
            throw APIError.entryNotReadable(entry.number, "it is a link to \(entry.linkTarget ?? "?"); links are never followed")
        case .other: throw APIError.entryNotReadable(entry.number, entry.problem ?? "it is not a regular file")
        }
        if let problem = entry.problem { throw APIError.entryNotReadable(entry.number, problem) }

        let size = entry.size
        let lastModified = entry.modifiedAt ?? upload.completedAt ?? upload.updatedAt
        let baseName = entry.path.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? "entry"
        var headers: HTTPFields = [
            .contentType: "application/octet-stream",
            .contentDisposition: ContentDisposition.attachment(filename: baseName),
            .xContentTypeOptions: "nosniff",
            .contentSecurityPolicy: "sandbox",
            .lastModified: HTTPDate.format(lastModified),
            .acceptRanges: "bytes",
            .cacheControl: "private, no-cache",
        ]
        var etag = "\"entry-\(upload.id)-\(entry.number)\""
        if let sha256 = entry.sha256, let digest = [UInt8](hex: sha256, byteCount: SHA256Digest.byteCount) {
            etag = "\"sha256-\(sha256)\""
            headers[.reprDigest] = "sha-256=:\(Data(digest).base64EncodedString()):"
        }
        headers[.eTag] = etag
        let (range, status) = try AttachmentsController.selectRange(
            request, size: size, etag: etag, lastModified: lastModified, of: "entry", headers: &headers)

        let reader: BundleEntryReader?
        if range.count > 0 {
            var checkpoint: BundleCheckpoint?
            if format == .tarGzip || format == .gzip {
                checkpoint = try await services.database.bundleCheckpoint(attachmentID: upload.id,
                                                                          atOrBefore: entry.dataOffset + range.first)
            }
            let startAt = checkpoint
            let blob = try await services.blobs.openForReading(id: upload.id)
            let blobSize = upload.offset
            do {
                reader = try await services.blobs.threads.blockingIO {
                    try BundleEntryReader(blob: blob, blobSize: blobSize, format: format, entry: entry,
                                          checkpoint: startAt, range: range.first...range.last)
                }
            } catch let error as BundleReadError {
                throw APIError.entryNotReadable(entry.number, error.description)
            }
        } else {
            reader = nil
        }
        headers[.inflatedBytes] = String(reader?.plannedInflate ?? 0)
        if request.method == .head {
            return Response(status: status, headers: headers)
        }

        let database = services.database
        let threads = services.blobs.threads
        let now = services.now
        let startedAt = now()
        let logged = Download(
            id: nil, uploadID: upload.id, userID: user.id!, startedAt: startedAt, finishedAt: startedAt, bytesSent: 0,
            range: request.headers[.range].map { String($0.prefix(200)) }, status: Int(status.code), completed: false,
            entryPath: entry.path)
        let channel = context.channel
        let body = ResponseBody(contentLength: Int(max(0, range.count))) { writer in
            var download = logged
            do {
                try await withGracefulShutdownHandler {
                    while let reader, let piece = try await threads.blockingIO({ try reader.next() }) {
                        try await writer.write(ByteBuffer(bytes: piece))
                        download.bytesSent += Int64(piece.count)
                    }
                } onGracefulShutdown: {
                    channel.close(promise: nil)
                }
                try await writer.finish(nil)
                download.completed = true
            } catch {
                download.finishedAt = now()
                let record = download
                _ = try? await Task { try await database.recordDownload(record, settlingLink: nil, reserved: 0) }.value
                throw error
            }
            download.finishedAt = now()
            try await database.recordDownload(download, settlingLink: nil, reserved: 0)
        }
        context.observation.streamsBody()
        return Response(status: status, headers: headers, body: body)
    }

    /// The entry's path from the request path: everything after `…/entries/`, percent-decoded (so `%2F`, `..`
    /// and any byte can be named), never normalised: archive paths are matched as the archive spells them.
    static func entryPath(_ request: Request, attachmentID: String) throws -> String {
        let raw = request.uri.path
        let marker = "/attachments/\(attachmentID)/entries/"
        guard let found = raw.range(of: marker), let path = String(raw[found.upperBound...]).removingPercentEncoding,
              !path.isEmpty else {
            throw APIError.badRequest("invalid_entry_path", "Name the entry after …/entries/, percent-encoded.")
        }
        return path
    }

    /// The one entry a path (and `n`) names.
    private func pick(_ attachmentID: String, path: String, number: String?) async throws -> BundleEntry {
        let matches = try await services.database.bundleEntries(attachmentID: attachmentID, path: path)
        if let number {
            guard let n = Int(number), n >= 1 else {
                throw APIError.badRequest("invalid_entry_number", "`n` must be an entry's number (a whole number from 1).")
            }
            guard let entry = matches.first(where: { $0.number == n }) else { throw APIError.entryNotFound("\(path) #\(n)") }
            return entry
        }
        switch matches.count {
        case 0: throw APIError.entryNotFound(path)
        case 1: return matches[0]
        default: throw APIError.ambiguousEntry(path, numbers: matches.map(\.number))
        }
    }
}

extension HTTPField.Name {
    /// Decompressed bytes a response inflates to serve an archive entry (issue #21's bound, observable).
    static let inflatedBytes = Self("CaseFiles-Inflated-Bytes")!
}
