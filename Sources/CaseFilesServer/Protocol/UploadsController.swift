import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// The tus 1.0 front-end: knows HTTP and tus's headers, statuses and upload states; the body goes through
/// the protocol-neutral upload engine (`UploadWriter`, `UploadAppend`), which knows neither.
struct UploadsController: Sendable {
    let services: AppServices

    /// tus 1.0's extensions, and ours: `casefiles-content-encoding` (README, "Compressed uploads").
    static let extensions = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation,"
        + ContentCoding.tusExtension

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.post("cases/:number/uploads", use: create)
        group.on("cases/:number/uploads", method: .options, use: options)
        group.on("uploads/:id", method: .head, use: head)
        group.patch("uploads/:id", use: patch)
        group.delete("uploads/:id", use: delete)
        group.on("uploads/:id", method: .options, use: options)
    }

    private var database: any MetadataStore { services.database }

    // MARK: - OPTIONS (tus core: discovery)

    @Sendable func options(_ request: Request, context: AppRequestContext) async throws -> Response {
        var headers: HTTPFields = [
            .tusVersion: TusProtocol.version,
            .tusExtension: Self.extensions,
            .tusChecksumAlgorithm: "sha1,sha256",
        ]
        if let max = services.limits.maxUploadSize { headers[.tusMaxSize] = String(max) }
        return Response(status: .noContent, headers: headers)
    }

    // MARK: - POST (creation, creation-with-upload, creation-defer-length)

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let uploader = try context.requireUploader()
        let fields = request.headers
        let concat = try ConcatenationFront.concatField(in: fields)
        if case .final(let partialIDs) = concat {
            return try await ConcatenationFront(services: services).createFinal(partialIDs, request: request, context: context)
        }

        // Guard clauses in the order of the spec: length, metadata, digests, then the case.
        let length = try TusHeaders.count(.uploadLength, in: fields)
        let deferLength = try TusHeaders.single(.uploadDeferLength, in: fields)
        switch (length, deferLength) {
        case (nil, nil):
            throw APIError.badRequest("length_required", "Send Upload-Length, or Upload-Defer-Length: 1 if the size is not known yet.")
        case (.some, .some):
            throw APIError.badRequest("length_conflict", "Send either Upload-Length or Upload-Defer-Length, not both.")
        case (nil, .some(let value)) where value != "1":
            throw APIError.invalidHeader(.uploadDeferLength, "the only allowed value is 1")
        default: break
        }
        if let length, let max = services.limits.maxUploadSize, length > max { throw APIError.uploadTooLarge(max: max) }
        let metadata = try UploadMetadata(parsing: TusHeaders.single(.uploadMetadata, in: fields) ?? "")
        let filename = try metadata.filename()
        let filetype = try metadata.string("filetype")
        let declared = try Self.mergeDeclared(try metadata.sha256(), try TusHeaders.reprDigest(in: fields))
        let carriesData = fields[.contentType].map(Self.isOffsetStream) ?? false
        if fields[.contentType] != nil && !carriesData && (request.headers[.contentLength] ?? "0") != "0" {
            throw APIError.wrongContentType()
        }
        let checksum = carriesData ? try DigestFields.requestDigest(in: fields) : nil
        let coding = carriesData ? try TusHeaders.contentCoding(in: fields) : nil
        // A compressed body's Content-Length counts encoded bytes: it says nothing of the room it takes.
        let contentLength = coding == nil ? try TusHeaders.count(.contentLength, in: fields) : nil

        guard let number = CaseNumber.normalise(context.parameters.get("number") ?? "") else {
            throw APIError.caseNotFound(context.parameters.get("number") ?? "")
        }
        let supportCase = try await authorizedCase(number, uploader: uploader, action: .useOwnUpload)
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }
        // Everything the headers decide is decided before anything is created (tus creation-with-upload):
        // a request refused here leaves nothing behind, and gets its answer before `100 Continue`.
        let bodyLength = carriesData || length == 0 ? contentLength : nil  // any other body is not read
        try checkBodyFits(bodyLength, length: length, offset: 0)

        let now = services.now()
        let upload = Upload(
            id: SecureRandom.identifier(), caseNumber: supportCase.number, filename: filename, filetype: filetype,
            rawMetadata: metadata.raw, length: length, offset: 0, state: .uploading, declaredSHA256: declared,
            digestState: SHA256Digest().savedState, sha256: nil, createdBy: uploader.accountableUserID, createdAt: now,
            updatedAt: now, completedAt: nil, purgedAt: nil, concat: concat == .partial ? .partial : nil,
            createdByDropToken: uploader.dropTokenID)
        // Blob, then row with the quotas and free space checked in its transaction (`UploadQuotas.create`).
        try await UploadQuotas.create(upload, reserving: length ?? bodyLength ?? 0, services: services)
        services.metrics.uploadsCreated.increment()
        context.observation.upload(upload.id)
        context.logger.info("upload created", metadata: ["upload": "\(upload.id)", "case": "\(upload.caseNumber)"])

        // Relative (RFC 9110 §10.2.2 allows it; it resolves against the URL the client used) unless a trusted
        // proxy reported the public host, whose origin then makes it absolute.
        var headers: HTTPFields = [.location: (context.publicOrigin ?? "") + "/api/v1/uploads/\(upload.id)"]
        var current = upload
        do {
            if upload.length == 0 {
                current = try await appendBody(nil, to: upload, request: request, checksum: nil, coding: nil,
                                               writer: nil, context: context)
            } else if carriesData {
                current = try await asWriter(upload.id, readingBody: true, context: context) { writer in
                    try await appendBody(request.body, to: upload, request: request, checksum: checksum, coding: coding,
                                         writer: writer, context: context)
                }
            }
        } catch {
            await removeFailedCreation(upload.id, context: context)
            // Nothing of this request is left to resume: a stop for shutdown says to send the POST again.
            if let stopped = error as? CaseFilesError, stopped.code == CaseFilesError.shuttingDown().code {
                throw CaseFilesError.shuttingDownBeforeCreation()
            }
            throw error
        }
        if carriesData || upload.length == 0 { headers[.uploadOffset] = String(current.offset) }
        if current.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(current)) }
        headers[.reprDigest] = DigestFields.verifiedReprDigest(of: current)
        return Response(status: .created, headers: headers)
    }

    /// A creation-with-upload request that fails after creating its upload (checksum mismatch, a body
    /// longer than declared, cut off, too slow, superseded, disk full, whole-file digest mismatch) never
    /// sent its `Location`, so the client can neither resume nor terminate what it made. It is removed,
    /// row and blob, even when bytes without `Upload-Checksum` were committed before a cut: without the
    /// URL they cannot be resumed. This runs only before the response, so a `201` sent is never undone;
    /// a verified upload is never removed. A blob whose removal fails is left to the orphan sweep.
    func removeFailedCreation(_ id: String, context: AppRequestContext) async {
        let services = self.services
        // A task of its own: the request may have been cancelled (superseded, too slow, shutdown).
        let outcome = await Task { () async -> (any Error)? in
            do {
                if try await services.database.deleteFailedCreation(id: id) { try await services.blobs.remove(id: id) }
                return nil
            } catch {
                return error
            }
        }.value
        if let outcome {
            context.logger.error("failed creation not removed", metadata: ["upload": "\(id)", "error": "\(outcome)"])
        } else {
            context.logger.info("failed creation removed", metadata: ["upload": "\(id)"])
        }
    }

    // MARK: - HEAD (tus core: where to resume)

    @Sendable func head(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (upload, _) = try await authorizedUpload(context, for: .read)
        if upload.concat == .final { return try await ConcatenationFront(services: services).head(upload) }
        if upload.state != .verified { try checkWritable(upload) }
        var headers: HTTPFields = [.uploadOffset: String(upload.offset), .cacheControl: "no-store"]
        if let length = upload.length {
            headers[.uploadLength] = String(length)
        } else {
            headers[.uploadDeferLength] = "1"
        }
        if !upload.rawMetadata.isEmpty { headers[.uploadMetadata] = upload.rawMetadata }
        if upload.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(upload)) }
        if upload.concat == .partial { headers[.uploadConcat] = "partial" }
        return Response(status: .ok, headers: headers)
    }

    // MARK: - PATCH (tus core: append)

    @Sendable func patch(_ request: Request, context: AppRequestContext) async throws -> Response {
        let started = MonotonicClock.nanoseconds()
        let fields = request.headers
        guard fields[.contentType].map(Self.isOffsetStream) == true else { throw APIError.wrongContentType() }
        let offset = try TusHeaders.offset(in: fields)
        let newLength = try TusHeaders.count(.uploadLength, in: fields)
        let checksum = try DigestFields.requestDigest(in: fields)
        let coding = try TusHeaders.contentCoding(in: fields)
        let declared = try TusHeaders.reprDigest(in: fields)
        let (found, supportCase) = try await authorizedUpload(context, for: .append)
        try await ConcatenationFront(services: services).checkChangeable(found)
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }
        try checkWritable(found)

        // A compressed body's Content-Length counts encoded bytes: it says nothing of the room it takes.
        let admission = AppendRequest(offset: offset, newLength: newLength, declaredSHA256: declared,
                                      contentLength: coding == nil ? try TusHeaders.count(.contentLength, in: fields) : nil)
        let upload = try await asWriter(found.id, readingBody: true, context: context) { writer async throws -> Upload in
            let upload = try await UploadAdmission.admit(admission, uploadID: found.id, services: services)
            return try await appendBody(request.body, to: upload, request: request, checksum: checksum, coding: coding,
                                        writer: writer, context: context, started: started)
        }
        var headers: HTTPFields = [.uploadOffset: String(upload.offset)]
        if upload.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(upload)) }
        headers[.reprDigest] = DigestFields.verifiedReprDigest(of: upload)
        return Response(status: .noContent, headers: headers)
    }

    // MARK: - DELETE (termination)

    @Sendable func delete(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (found, _) = try await authorizedUpload(context, for: .terminate)
        try await ConcatenationFront(services: services).checkChangeable(found)
        try await asWriter(found.id, readingBody: false, context: context) { _ in
            guard let upload = try await database.upload(id: found.id) else { throw APIError.uploadNotFound(found.id) }
            if upload.state == .uploading { try checkWritable(upload) }
            switch upload.state {
            case .uploading:
                try await database.terminateUpload(id: upload.id, at: services.now())
                try await services.blobs.remove(id: upload.id)
                services.metrics.uploadsTerminated.increment()
                context.logger.info("upload terminated", metadata: ["upload": "\(upload.id)"])
            case .verified:
                throw APIError(.forbidden, "attachment_not_deletable",
                               "Upload \(upload.id) is complete and is now an attachment of case \(upload.caseNumber); "
                               + "attachments are removed only by the retention policy.")
            case .failed, .terminated, .expired, .purged:
                throw APIError.uploadGone(upload)
            }
        }
        return Response(status: .noContent)
    }

    // MARK: - The data path: the upload engine (UploadAppend), behind tus's headers

    /// Appends one request body at the upload's committed offset (`UploadAppend`: a body with
    /// `Upload-Checksum` is all-or-nothing; one without keeps whatever arrived before a cut). Returns the
    /// committed upload. The caller holds the upload's writer lock (`asWriter`), unless there is no body.
    /// `coding`: the body's `Content-Encoding` (`casefiles-content-encoding`): the engine inflates it.
    func appendBody(
        _ body: RequestBody?, to upload: Upload, request: Request,
        checksum: (ChecksumAlgorithm, [UInt8])?, coding: ContentCoding?, writer: UploadWriter?, context: AppRequestContext,
        started: UInt64 = MonotonicClock.nanoseconds()
    ) async throws -> Upload {
        let contentLength = try TusHeaders.count(.contentLength, in: request.headers)
        let append = try await UploadAppend.prepare(upload, by: try context.requireUploader().accountableUserID, contentLength: contentLength,
                                                    checksum: checksum, coding: coding, services: services,
                                                    requestStarted: started)
        // The one place `100 Continue` is sent: every check the headers decide has passed (the offset and
        // length under the writer lock, the room for Content-Length, the case, the permissions). RFC 9110
        // §10.1.1: a final status the headers decide is sent at once, so the client never sends the body.
        // From here the body is read under the upload's rate watchdog, not the connection's body deadline;
        // a request refused before this line keeps that deadline (a refused client may never send its body).
        if body != nil {
            await context.takeOverBodyDeadline()
            await context.sendContinueIfExpected()
        }
        return try await append.run(body, writer: writer, logger: context.logger)
    }

    // MARK: - Helpers

    /// Runs `operation` as the upload's only writer (`UploadWriter`: newest wins, the slow-client watchdog
    /// when it reads a body, shutdown), and answers what stopped it.
    func asWriter<T: Sendable>(
        _ uploadID: String, readingBody: Bool, context: AppRequestContext,
        _ operation: @escaping @Sendable (UploadWriter) async throws -> T
    ) async throws -> T {
        let finished = await UploadWriter.run(uploadID, locks: services.locks, limits: services.limits,
                                              watchesBody: readingBody, operation)
        if readingBody { context.observation.bytesIn(finished.bytesReceived) }
        // A body read was stopped part-way: its stream is gone, so the connection cannot be reused.
        if readingBody && finished.stopReason != nil { await context.closeConnectionAfterResponse() }
        return try finished.result.get()
    }

    func authorizedCase(_ number: String, uploader: Uploader, action: AccessPolicy.Action) async throws -> SupportCase {
        guard let supportCase = try await database.supportCase(number: number) else { throw APIError.caseNotFound(number) }
        switch uploader.decide(caseNumber: number, caseAccount: supportCase.account, action: action) {
        case .allow: return supportCase
        case .hidden: throw APIError.caseNotFound(number)
        case .forbidden: throw APIError.forbidden("do this on case \(number)")
        }
    }

    /// What a request does to an upload, for `AccessPolicy`: HEAD reads it, PATCH appends to it, DELETE terminates it.
    enum UploadUse { case read, append, terminate }

    /// The upload named in the path, if the caller may see it and `use` it: only its creator appends (403
    /// `not_upload_creator` for anyone else); others terminate it as the permission table says.
    func authorizedUpload(_ context: AppRequestContext, for use: UploadUse) async throws -> (Upload, SupportCase) {
        let uploader = try context.requireUploader()
        let id = context.parameters.get("id") ?? ""
        guard SecureRandom.isIdentifier(id), let (upload, supportCase) = try await database.uploadWithCase(id: id) else {
            throw APIError.uploadNotFound(String(id.prefix(64)))
        }
        // Its creator: the same user with their own token, or the same drop credential (issue #20).
        let own = uploader.created(upload)
        let action: AccessPolicy.Action = switch use {
        case .read: own ? .useOwnUpload : .readCase
        case .append: own ? .useOwnUpload : .appendToOthersUpload
        case .terminate: own ? .useOwnUpload : .modifyOthersUpload
        }
        switch uploader.decide(caseNumber: supportCase.number, caseAccount: supportCase.account, action: action) {
        case .allow: return (upload, supportCase)
        case .hidden: throw APIError.uploadNotFound(id)
        case .forbidden where action == .appendToOthersUpload: throw APIError(CaseFilesError.notUploadCreator(id))
        case .forbidden: throw APIError.forbidden("change upload \(id), which another user created")
        }
    }

    /// tus expiration: an unfinished upload lives `uploadExpiry` past its last progress.
    func expiresAt(_ upload: Upload) -> Date {
        Upload.expiresAt(lastProgress: upload.updatedAt, expiry: services.limits.uploadExpiry)
    }

    func checkWritable(_ upload: Upload) throws {
        try UploadAdmission.checkWritable(upload, now: services.now(), expiry: services.limits.uploadExpiry)
    }

    /// Refuses a body whose `Content-Length` (bytes) is more than the upload has room for, before a byte is
    /// read (`UploadRoom`: 413 `body_exceeds_length`, or `upload_too_large` for a deferred length).
    private func checkBodyFits(_ contentLength: Int64?, length: Int64?, offset: Int64) throws {
        try UploadRoom.check(contentLength, length: length, offset: offset, maxUploadSize: services.limits.maxUploadSize)
    }

    static func isOffsetStream(_ contentType: String) -> Bool {
        contentType.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
            == TusProtocol.contentType
    }

    /// The whole-file digest may come as metadata `sha256` or as `Repr-Digest`; two different values are an error.
    static func mergeDeclared(_ metadata: String?, _ header: String?) throws -> String? {
        if let metadata, let header, metadata != header {
            throw APIError.badRequest("conflicting_digest", "Upload-Metadata sha256 and Repr-Digest name different SHA-256 values.")
        }
        return metadata ?? header
    }
}
