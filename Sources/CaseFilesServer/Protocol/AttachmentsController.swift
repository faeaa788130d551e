import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// Downloads: attachment JSON, and its bytes streamed from disk with ranges, validators and digests.
/// Never takes an upload's writer lock: a verified blob is immutable, so a long download neither
/// blocks nor is blocked by anything.
struct AttachmentsController: Sendable {
    let services: AppServices
    let links: DownloadLinks
    static let readSize = 256 * 1024

    init(services: AppServices) throws {
        self.services = services
        _ = try services.linkKeys.keys()  // a missing or damaged key file stops the start, not the first download
        self.links = DownloadLinks(keyFile: services.linkKeys, maxLifetime: services.security.maxLinkLifetime)
    }

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("attachments/:id", use: show)
        group.post("attachments/:id/link", use: link)
        group.get("attachments/:id/content", use: content)
        group.head("attachments/:id/content", use: content)
        group.get("access-log", use: accessLog)
    }

    // MARK: - JSON

    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> AttachmentRepresentation {
        let upload = try await verifiedAttachment(context, user: try context.requireUser())
        let names = try await services.database.userNames(ids: [upload.createdBy])
        return AttachmentRepresentation(upload, uploadedBy: names[upload.createdBy])
    }

    struct AccessLog: ResponseEncodable {
        var downloads: [DownloadEntry]
    }

    /// Who downloaded what: admins only (a customer's organisation asks its support admin).
    @Sendable func accessLog(_ request: Request, context: AppRequestContext) async throws -> AccessLog {
        let user = try context.requireUser()
        guard AccessPolicy.decide(user: user, caseAccount: nil, action: .readAccessLog) == .allow else {
            throw APIError.forbidden("read the download access log; ask an administrator")
        }
        let caseNumber = try request.uri.queryParameters["case"].map { raw in
            guard let number = CaseNumber.normalise(String(raw)) else {
                throw APIError.badRequest("invalid_case_number", "`case` must be a case number like 00001413.")
            }
            return number
        }
        let limit = try request.uri.queryParameters["limit"].map { raw in
            guard let limit = Int(String(raw)), (1...10_000).contains(limit) else {
                throw APIError.badRequest("invalid_limit", "`limit` must be a whole number from 1 to 10000.")
            }
            return limit
        } ?? 1000
        let attachment = request.uri.queryParameters["attachment"].map(String.init)
        return AccessLog(downloads: try await services.database.downloads(
            caseNumber: caseNumber, attachmentID: attachment, limit: limit))
    }

    // MARK: - Signed links

    struct Link: ResponseEncodable {
        var url: String
        var expiresAt: Date
    }

    /// A short-lived URL for this attachment that needs no bearer header (browsers, pasted into curl), valid
    /// for the configured maximum lifetime and for twice the file's size in bytes (one download, resumed).
    @Sendable func link(_ request: Request, context: AppRequestContext) async throws -> Link {
        let user = try context.requireUser()
        let upload = try await verifiedAttachment(context, user: user)
        let nonce = SecureRandom.identifier()
        let issuedAt = services.now()
        let expiresAt = issuedAt.addingTimeInterval(links.maxLifetime)
        let url = try links.path(id: upload.id, nonce: nonce, expires: Int64(expiresAt.timeIntervalSince1970))
        try await services.database.createDownloadLink(
            DownloadLink(nonce: nonce, uploadID: upload.id, userID: user.id!, expiresAt: expiresAt, issuedAt: issuedAt))
        return Link(url: url, expiresAt: expiresAt)
    }

    /// The user a signed link was issued to and its row, if the signature is valid under a current key and
    /// the row (the authority, whatever the URL says) exists and has not expired. Its byte budget is
    /// charged later, once the response's size is known.
    private func linkUser(_ request: Request, id: String, nonce: String) async throws -> (User, DownloadLink) {
        let query = request.uri.queryParameters
        let now = services.now()
        guard try links.verify(id: id, nonce: nonce, expires: query["expires"].map(String.init) ?? "",
                               sig: query["sig"].map(String.init) ?? "", now: now),
              let link = try await services.database.downloadLink(nonce: nonce, uploadID: id),
              links.isLive(link, now: now)
        else { throw APIError.invalidLink() }
        guard let user = try await services.database.user(id: link.userID), user.revokedAt == nil else {
            throw APIError.invalidToken()
        }
        return (user, link)
    }

    // MARK: - Content

    @Sendable func content(_ request: Request, context: AppRequestContext) async throws -> Response {
        let id = context.parameters.get("id") ?? ""
        let user: User
        var link: DownloadLink?
        if let nonce = request.uri.queryParameters["link"], context.user == nil {
            (user, link) = try await linkUser(request, id: id, nonce: String(nonce))
            context.observation.user(user)
        } else {
            user = try context.requireUser()
        }
        let upload = try await verifiedAttachment(context, user: user)
        guard let sha256 = upload.sha256, let digest = [UInt8](hex: sha256, byteCount: SHA256Digest.byteCount) else {
            throw StorageError.io(operation: "verified attachment without a digest", errno: 0)
        }
        let size = upload.offset
        let lastModified = upload.completedAt ?? upload.updatedAt
        let etag = "\"sha256-\(sha256)\""
        var headers: HTTPFields = [
            .contentType: "application/octet-stream",
            .contentDisposition: ContentDisposition.attachment(filename: upload.filename),
            .xContentTypeOptions: "nosniff",
            .contentSecurityPolicy: "sandbox",
            .eTag: etag,
            .lastModified: HTTPDate.format(lastModified),
            .reprDigest: "sha-256=:\(Data(digest).base64EncodedString()):",
            .acceptRanges: "bytes",
            .cacheControl: "private, no-cache",
        ]

        let (range, status) = try Self.selectRange(request, size: size, etag: etag, lastModified: lastModified,
                                                    of: "file", headers: &headers)
        // RFC 9530 §4 `Want-Content-Digest`: a whole 200 without content coding is the representation itself, so
        // its Content-Digest is the Repr-Digest (sent always); a 206's part would need a pass of its own: omitted.
        if status == .ok, DigestFields.wants(.wantContentDigest, in: request.headers) {
            headers[.contentDigest] = headers[.reprDigest]
        }
        if request.method == .head {
            return Response(status: status, headers: headers)
        }

        let reader = try await AttachmentContent.open(upload, services: services)  // a final: its partials in order
        let database = services.database
        // A link pays for the whole response before a byte is sent, in one transaction, so concurrent
        // requests on one link cannot together pass its budget; what was not sent is refunded at the end.
        let charged = max(0, range.count)
        let nonce = link?.nonce
        if let nonce {
            let budget = DownloadLinks.byteBudget(fileSize: size)
            guard try await database.reserveLinkBytes(nonce: nonce, count: charged, budget: budget) else {
                throw APIError.linkUsedUp(budget: budget)
            }
        }
        let now = services.now
        let startedAt = now()
        let logged = Download(
            id: nil, uploadID: upload.id, userID: user.id!, startedAt: startedAt, finishedAt: startedAt, bytesSent: 0,
            range: request.headers[.range].map { String($0.prefix(200)) }, status: Int(status.code), completed: false)
        let channel = context.channel
        let body = ResponseBody(contentLength: Int(max(0, range.count))) { writer in
            var position = range.first
            var download = logged
            do {
                // On SIGTERM a download is cut rather than waited for (it may take hours, or its client may
                // have stopped reading): the client resumes it with Range, as after any cut.
                try await withGracefulShutdownHandler {
                    while position <= range.last {
                        let count = Int(min(Int64(Self.readSize), range.last - position + 1))
                        let at = position
                        // pread may wait on the disk: the async read runs it on storage's blocking threads.
                        let buffer = try await reader.read(at: at, count: count, allocator: ByteBufferAllocator())
                        guard buffer.readableBytes > 0 else { throw StorageError.missingBlob(upload.id) }
                        try await writer.write(buffer)
                        position += Int64(buffer.readableBytes)
                        download.bytesSent += Int64(buffer.readableBytes)
                    }
                } onGracefulShutdown: {
                    channel.close(promise: nil)
                }
                try await writer.finish(nil)
                download.completed = true
            } catch {
                download.finishedAt = now()
                let record = download
                _ = try? await Task { try await database.recordDownload(record, settlingLink: nonce, reserved: charged) }.value
                throw error
            }
            download.finishedAt = now()
            try await database.recordDownload(download, settlingLink: nonce, reserved: charged)
        }
        context.observation.streamsBody()
        return Response(status: status, headers: headers, body: body)
    }


    /// The part of a `size`-byte representation a GET answers (RFC 9110 §14: `Range`, and `If-Range` with a stale
    /// validator meaning the whole): the range and status, with `Content-Range` and `Content-Length` set in
    /// `headers`. Downloads and archive entries (`EntriesController`) alike.
    /// - Throws: 416 `range_not_satisfiable` naming `what` ("file", "entry").
    static func selectRange(
        _ request: Request, size: Int64, etag: String, lastModified: Date, of what: String, headers: inout HTTPFields
    ) throws -> (ByteRange, HTTPResponse.Status) {
        var resolution = ByteRange.resolve(request.headers[.range], size: size)
        if let ifRange = request.headers[.ifRange], !ifRangeMatches(ifRange, etag: etag, lastModified: lastModified) {
            resolution = .whole  // the client's partial copy is stale: send the whole new representation
        }
        let range: ByteRange
        let status: HTTPResponse.Status
        switch resolution {
        case .unsatisfiable:
            throw APIError(.rangeNotSatisfiable, "range_not_satisfiable",
                           "The requested range is outside the \(what)'s \(size) bytes.",
                           headers: [.contentRange: "bytes */\(size)", .acceptRanges: "bytes", .eTag: etag])
        case .whole:
            range = ByteRange(first: 0, last: size - 1)
            status = .ok
        case .partial(let partial):
            range = partial
            status = .partialContent
            headers[.contentRange] = "bytes \(partial.first)-\(partial.last)/\(size)"
        }
        headers[.contentLength] = String(max(0, range.count))
        return (range, status)
    }
    /// RFC 9110 §13.1.5: a strong ETag must match exactly; a date must equal Last-Modified.
    static func ifRangeMatches(_ value: String, etag: String, lastModified: Date) -> Bool {
        let value = value.trimmingCharacters(in: .whitespaces)
        if value.hasPrefix("\"") { return value == etag }
        if value.hasPrefix("W/") { return false }
        guard let date = HTTPDate.parse(value) else { return false }
        return Int64(date.timeIntervalSince1970) == Int64(lastModified.timeIntervalSince1970)
    }

    /// The attachment named in the path, if the caller may read its case and it verified.
    private func verifiedAttachment(_ context: AppRequestContext, user: User) async throws -> Upload {
        try await Self.verifiedAttachment(context, user: user, database: services.database)
    }

    /// The same, for the other readers of an attachment (`EntriesController`): one rule for who may read what.
    static func verifiedAttachment(_ context: AppRequestContext, user: User, database: any MetadataStore) async throws -> Upload {
        let id = context.parameters.get("id") ?? ""
        guard SecureRandom.isIdentifier(id),
              let (upload, supportCase) = try await database.uploadWithCase(id: id),
              AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: .readCase) == .allow
        else {
            throw APIError(.notFound, "attachment_not_found", "No attachment \(id.prefix(64)) is visible to you.")
        }
        switch upload.state {
        case .verified where upload.concat == .partial:  // a part of a final upload, never an attachment
            throw APIError(.notFound, "attachment_not_found", "No attachment \(id.prefix(64)) is visible to you.")
        case .verified:
            return upload
        case .uploading:
            throw APIError(.notFound, "attachment_not_found",
                           "Upload \(upload.id) is still in progress (\(upload.offset) bytes so far); it becomes an "
                           + "attachment once every byte arrived and its SHA-256 verified.")
        case .failed, .terminated, .expired, .purged:
            throw APIError.uploadGone(upload)
        }
    }
}

/// `Content-Disposition: attachment` with an ASCII fallback and an RFC 5987 UTF-8 `filename*` (RFC 6266).
enum ContentDisposition {
    static func attachment(filename: String) -> String {
        let cleaned = String(String.UnicodeScalarView(filename.unicodeScalars.filter { scalar in
            switch scalar.value {
            case 0x00...0x1F, 0x7F...0x9F, 0x200E, 0x200F, 0x061C, 0x202A...0x202E, 0x2066...0x2069: false
            default: true
            }
        }))
        let name = cleaned.isEmpty ? "download" : cleaned
        let fallback = String(name.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && scalar != "\"" && scalar != "\\" && scalar != "%" ? Character(scalar) : "_"
        })
        var encoded = ""
        for byte in name.utf8 {
            // attr-char (RFC 5987 §3.2.1): ALPHA / DIGIT / "!#$&+-.^_`|~"
            if (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || "!#$&+-.^_`|~".utf8.contains(byte)
            {
                encoded.append(Character(UnicodeScalar(byte)))
            } else {
                encoded += String(format: "%%%02X", byte)
            }
        }
        return "attachment; filename=\"\(fallback)\"; filename*=UTF-8''\(encoded)"
    }
}

/// IMF-fixdate (RFC 9110 §5.6.7), as used by Last-Modified, If-Range and Upload-Expires. Formatting
/// uses strftime (C locale): thread-safe and cheap, unlike building a DateFormatter per response.
enum HTTPDate {
    static func format(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Parsing is rare (If-Range), so a formatter per call is fine here.
    static func parse(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text)
    }
}

extension HTTPField.Name {
    static let contentSecurityPolicy = Self("Content-Security-Policy")!
}
