import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine

/// One-command uploads with plain curl (issue #20): `PUT /api/v1/cases/{n}/files/{filename}` with the whole file
/// as the body (`curl -T big.log -u 00001413:TOKEN URL/`), resumed by name with `HEAD` and a `Content-Range` PUT
/// (`curl -C N -T big.log`). A front-end of the upload engine like tus: the same admission, the same append
/// (both SHA-256s, fsync, commit), the same verified attachment at the end.
///
/// Which upload a request addresses: a PUT without `Content-Range` always creates a new one (the same name twice is
/// two attachments, never an overwrite); `HEAD` and a PUT with `Content-Range` address the newest unfinished upload
/// of that name in the case made by the same uploader (user, or drop credential).
struct FilesController: Sendable {
    let services: AppServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.put("cases/:number/files/:filename", use: put)
        group.on("cases/:number/files/:filename", method: .head, use: head)
    }

    private var database: any MetadataStore { services.database }

    // MARK: - HEAD: how much of the newest unfinished upload of that name arrived

    /// 200 with `Upload-Offset` (bytes committed) and, when bytes arrived, `Content-Range: bytes 0-(offset-1)/*`
    /// (RFC 9110 §14.4's syntax for the part stored so far; the complete length is `*` until the file is whole);
    /// `Upload-Length` once known. 404 `no_unfinished_upload` when there is nothing to continue.
    @Sendable func head(_ request: Request, context: AppRequestContext) async throws -> Response {
        let uploader = try context.requireUploader()
        let filename = try Self.filename(context)
        let supportCase = try await authorizedCase(context, uploader: uploader)
        guard let upload = try await newestUnfinished(supportCase.number, filename, uploader) else {
            throw APIError.noUnfinishedUpload(filename)
        }
        try UploadAdmission.checkWritable(upload, now: services.now(), expiry: services.limits.uploadExpiry)
        context.observation.upload(upload.id)
        var headers: HTTPFields = [.uploadOffset: String(upload.offset), .cacheControl: "no-store"]
        if let length = upload.length { headers[.uploadLength] = String(length) }
        if upload.offset > 0 { headers[.contentRange] = "bytes 0-\(upload.offset - 1)/*" }
        headers[.uploadExpires] = HTTPDate.format(
            Upload.expiresAt(lastProgress: upload.updatedAt, expiry: services.limits.uploadExpiry))
        return Response(status: .ok, headers: headers)
    }

    // MARK: - PUT: a new upload, or the rest of one

    @Sendable func put(_ request: Request, context: AppRequestContext) async throws -> Response {
        let started = MonotonicClock.nanoseconds()
        let uploader = try context.requireUploader()
        let filename = try Self.filename(context)
        let fields = request.headers
        let range = try TusHeaders.single(.contentRange, in: fields).map(ContentRange.parse)
        let contentLength = try TusHeaders.count(.contentLength, in: fields)
        let declared = try TusHeaders.reprDigest(in: fields)
        if let range, let contentLength, contentLength != range.count {
            throw APIError.badRequest("content_range_mismatch",
                                      "Content-Range names \(range.count) bytes but Content-Length is \(contentLength).")
        }
        let supportCase = try await authorizedCase(context, uploader: uploader)
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }

        let existing: Upload? = if range != nil { try await newestUnfinished(supportCase.number, filename, uploader) } else { nil }
        let upload: Upload
        switch (range, existing) {
        case (_, .some(let found)):
            upload = found
        case (.some(let range), nil) where range.first > 0:
            throw APIError.noUnfinishedUpload(filename)
        default:
            // The whole file: its length is Content-Range's complete length, or Content-Length, or (chunked) unknown
            // until the body ends.
            upload = try await create(filename, length: range?.complete ?? contentLength, in: supportCase,
                                      uploader: uploader, declared: declared, context: context)
        }
        context.observation.upload(upload.id)
        let admission = AppendRequest(offset: range?.first ?? 0, newLength: range?.complete,
                                      declaredSHA256: declared, contentLength: contentLength)
        let committed: Upload
        do {
            committed = try await asWriter(upload.id, context: context) { writer in
                try await append(request.body, admission, to: upload.id, uploader: uploader, writer: writer,
                                 context: context, started: started)
            }
        } catch {
            if existing == nil { await removeIfEmpty(upload.id, context: context) }
            throw error
        }
        return answer(committed, request: request)
    }

    /// Admits and appends the body (the engine's steps 4-10, ARCHITECTURE.md); a body without a length (chunked)
    /// ends the file: its length is then set to what arrived and the upload completes with an empty append.
    private func append(
        _ body: RequestBody, _ admission: AppendRequest, to id: String, uploader: Uploader, writer: UploadWriter,
        context: AppRequestContext, started: UInt64
    ) async throws -> Upload {
        let upload = try await UploadAdmission.admit(admission, uploadID: id, services: services)
        let append = try await UploadAppend.prepare(upload, by: uploader.accountableUserID,
                                                    contentLength: admission.contentLength, checksum: nil,
                                                    services: services, requestStarted: started)
        await context.takeOverBodyDeadline()
        await context.sendContinueIfExpected()  // every check the headers decide has passed (RFC 9110 §10.1.1)
        let committed = try await append.run(body, writer: writer, logger: context.logger)
        guard committed.length == nil else { return committed }
        // The body ended normally (a cut one throws above): the file is what arrived.
        let ending = AppendRequest(offset: committed.offset, newLength: committed.offset, declaredSHA256: nil, contentLength: 0)
        let final = try await UploadAdmission.admit(ending, uploadID: id, services: services)
        return try await UploadAppend.prepare(final, by: uploader.accountableUserID, contentLength: 0, checksum: nil,
                                              services: services)
            .run(nil as RequestBody?, writer: writer, logger: context.logger)
    }

    /// 201 with the attachment (text for a human, JSON when asked), or 200 with the offset when the request sent
    /// only part of the file (a `Content-Range` that stops short of the end).
    private func answer(_ upload: Upload, request: Request) -> Response {
        // JSON only when asked for (Accept: application/json); a human at a terminal reads the line.
        let wantsJSON = request.headers[.accept]?.lowercased().contains("application/json") ?? false
        if upload.state == .verified {
            let headers: HTTPFields = [.location: "/api/v1/attachments/\(upload.id)", .uploadOffset: String(upload.offset)]
            if wantsJSON, let json = try? JSONEncoder.sorted.encode(AttachmentRepresentation(upload, uploadedBy: nil)) {
                var headers = headers
                headers[.contentType] = APIError.contentType
                return Response(status: .created, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: json)))
            }
            return Self.text(.created, "Stored \(upload.filename) in case \(upload.caseNumber) as attachment \(upload.id): "
                             + "\(upload.offset) bytes, SHA-256 \(upload.sha256 ?? "")\n", headers: headers)
        }
        return Self.text(.ok, "Received \(upload.offset) of \(upload.length.map(String.init) ?? "?") bytes of "
                         + "\(upload.filename); send the rest with Content-Range (curl -C \(upload.offset) -T FILE URL).\n",
                         headers: [.uploadOffset: String(upload.offset)])
    }

    static func text(_ status: HTTPResponse.Status, _ line: String, headers: HTTPFields) -> Response {
        var headers = headers
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: line)))
    }

    // MARK: - Helpers

    /// Creates the upload row and blob, after the checks tus creation makes (size limit here; quotas and free space in
    /// the row's transaction: `UploadQuotas.create`).
    private func create(
        _ filename: String, length: Int64?, in supportCase: SupportCase, uploader: Uploader, declared: String?,
        context: AppRequestContext
    ) async throws -> Upload {
        if let length, let max = services.limits.maxUploadSize, length > max { throw APIError.uploadTooLarge(max: max) }
        let now = services.now()
        // The metadata a tus HEAD on this upload echoes: the file name, as a tus client would have sent it.
        let raw = "filename " + Data(filename.utf8).base64EncodedString()
        let upload = Upload(
            id: SecureRandom.identifier(), caseNumber: supportCase.number, filename: filename, filetype: nil,
            rawMetadata: raw, length: length, offset: 0, state: .uploading, declaredSHA256: declared,
            digestState: SHA256Digest().savedState, sha256: nil, createdBy: uploader.accountableUserID, createdAt: now,
            updatedAt: now, createdByDropToken: uploader.dropTokenID)
        // Blob, then row with the quotas and free space checked in its transaction (`UploadQuotas.create`).
        try await UploadQuotas.create(upload, reserving: length ?? 0, services: services)
        services.metrics.uploadsCreated.increment()
        context.logger.info("upload created", metadata: ["upload": "\(upload.id)", "case": "\(upload.caseNumber)", "via": "put"])
        return upload
    }

    /// A new upload whose first request failed before a byte was committed leaves nothing behind; one with bytes
    /// stays, to be continued by name (HEAD, then a `Content-Range` PUT).
    private func removeIfEmpty(_ id: String, context: AppRequestContext) async {
        let services = self.services
        // A task of its own: the request may have been cancelled (superseded, too slow, shutdown).
        await Task {
            guard let upload = try? await services.database.upload(id: id), upload.state == .uploading, upload.offset == 0,
                  (try? await services.database.deleteFailedCreation(id: id)) == true
            else { return }
            try? await services.blobs.remove(id: id)
            context.logger.info("empty upload removed", metadata: ["upload": "\(id)"])
        }.value
    }

    private func newestUnfinished(_ caseNumber: String, _ filename: String, _ uploader: Uploader) async throws -> Upload? {
        try await database.newestUnfinishedUpload(caseNumber: caseNumber, filename: filename,
                                                  createdBy: uploader.accountableUserID, dropToken: uploader.dropTokenID)
    }

    /// The case in the path, if the uploader may upload into it (`AccessPolicy`: 404 hides another account's case,
    /// and any case but a drop credential's own).
    private func authorizedCase(_ context: AppRequestContext, uploader: Uploader) async throws -> SupportCase {
        let raw = context.parameters.get("number") ?? ""
        guard let number = CaseNumber.normalise(raw), let supportCase = try await database.supportCase(number: number) else {
            throw APIError.caseNotFound(String(raw.prefix(16)))
        }
        switch uploader.decide(caseNumber: number, caseAccount: supportCase.account, action: .useOwnUpload) {
        case .allow: return supportCase
        case .hidden: throw APIError.caseNotFound(number)
        case .forbidden: throw APIError.forbidden("upload into case \(number)")
        }
    }

    /// The last path segment, percent-decoded (the router does not decode), under the rule tus `filename` follows
    /// (`UploadMetadata.filenameProblem`).
    static func filename(_ context: AppRequestContext) throws -> String {
        let raw = context.parameters.get("filename") ?? ""
        guard let name = raw.removingPercentEncoding, !name.isEmpty else {
            throw APIError.badRequest("invalid_filename", "The file name in the URL is empty or not valid percent-encoded UTF-8.")
        }
        if let problem = UploadMetadata.filenameProblem(name) {
            throw APIError.badRequest("invalid_filename", "The filename \(problem). Rename the file and retry.")
        }
        return name
    }

    /// Runs `operation` as the upload's only writer (`UploadWriter`, as tus PATCH does).
    private func asWriter<T: Sendable>(
        _ uploadID: String, context: AppRequestContext, _ operation: @escaping @Sendable (UploadWriter) async throws -> T
    ) async throws -> T {
        let finished = await UploadWriter.run(uploadID, locks: services.locks, limits: services.limits,
                                              watchesBody: true, operation)
        context.observation.bytesIn(finished.bytesReceived)
        if finished.stopReason != nil { await context.closeConnectionAfterResponse() }
        return try finished.result.get()
    }
}

/// `Content-Range: bytes FIRST-LAST/COMPLETE` on a PUT (RFC 9110 §14.4, §14.5 partial PUT): the body is bytes
/// FIRST..LAST (inclusive) of a file of COMPLETE bytes. `curl -C N -T FILE` sends `bytes N-(size-1)/size`, and
/// `curl -C - -T FILE` sends `bytes 0-(size-1)/size` (it cannot ask an HTTP server for the size).
struct ContentRange: Equatable, Sendable {
    var first: Int64
    var last: Int64
    var complete: Int64

    /// The body's length in bytes.
    var count: Int64 { last - first + 1 }

    static func parse(_ text: String) throws -> ContentRange {
        let invalid = APIError.invalidHeader(.contentRange, "must be `bytes FIRST-LAST/COMPLETE` with FIRST <= LAST < COMPLETE")
        guard text.hasPrefix("bytes "), let slash = text.firstIndex(of: "/") else { throw invalid }
        let span = text[text.index(text.startIndex, offsetBy: 6)..<slash].split(separator: "-", omittingEmptySubsequences: false)
        guard span.count == 2, let first = WireFormat.parseCount(String(span[0])),
              let last = WireFormat.parseCount(String(span[1])),
              let complete = WireFormat.parseCount(String(text[text.index(after: slash)...])),
              first <= last, last < complete
        else { throw invalid }
        return ContentRange(first: first, last: last, complete: complete)
    }
}
