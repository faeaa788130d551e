import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import CaseFilesCore
import CaseFilesEngine

/// The IETF "Resumable Uploads for HTTP" front-end (draft-ietf-httpbis-resumable-upload, interop versions 3, 8
/// and 9: `InteropVersion`), on the same routes and upload resources as tus: an upload created by either is
/// inspected, appended to, completed and cancelled by either. Like `UploadsController` it knows HTTP only; the
/// bytes go through the protocol-neutral engine (`UploadAdmission`, `UploadAppend`, `UploadWriter`), through
/// the tus front-end's own steps (`asWriter`, `appendBody`, the authorization), so each rule stays in one place.
struct ResumableUploadController: Sendable {
    let services: AppServices

    static let partialUpload = "application/partial-upload"
    static let uploadResumptionSupported = HTTPResponse.Status(code: 104, reasonPhrase: "Upload Resumption Supported")

    private var tus: UploadsController { UploadsController(services: services) }

    /// Routes an IETF request (`ResumableUploadMiddleware` decided it is one) by its method; the router
    /// already matched the path and refused any other method with 405.
    func respond(to request: Request, context: AppRequestContext, fields: IETFRequestFields) async throws -> Response {
        switch request.method {
        case .post: try await create(request, context: context, fields: fields)
        case .head: try await head(request, context: context, fields: fields)
        case .patch: try await patch(request, context: context, fields: fields)
        case .delete: try await tus.delete(request, context: context)
        default: throw APIError(.methodNotAllowed, "method_not_allowed", "This endpoint does not accept \(request.method).")
        }
    }

    /// The limits a new upload gets (OPTIONS, and a 413's answer): the maximum size, and its lifetime without progress.
    var newUploadLimit: UploadLimit {
        UploadLimit(maxSize: services.limits.maxUploadSize, maxAge: Int64(services.limits.uploadExpiry))
    }

    // MARK: - Upload creation (draft, "Upload Creation")

    func create(_ request: Request, context: AppRequestContext, fields ietf: IETFRequestFields) async throws -> Response {
        let uploader = try context.requireUploader()
        let fields = request.headers
        try Self.refuseContentEncoding(fields)
        guard let complete = ietf.complete else { throw Self.completeRequired(ietf.version) }
        if let offset = ietf.offset, offset != 0 { throw IETFError.mismatchingOffset(expected: 0, provided: offset) }
        let contentLength = try TusHeaders.count(.contentLength, in: fields)
        let length = try Self.length(declared: ietf.length, complete: complete, offset: 0, contentLength: contentLength)
        if let length, let max = services.limits.maxUploadSize, length > max { throw APIError.uploadTooLarge(max: max) }
        let id = SecureRandom.identifier()
        let filename = try Self.filename(in: fields, id: id)
        let filetype = fields[.contentType]
        let declared = try TusHeaders.reprDigest(in: fields)

        guard let number = CaseNumber.normalise(context.parameters.get("number") ?? "") else {
            throw APIError.caseNotFound(context.parameters.get("number") ?? "")
        }
        let supportCase = try await tus.authorizedCase(number, uploader: uploader, action: .useOwnUpload)
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }
        // Everything the headers decide is decided before anything is created, as for tus.
        try UploadRoom.check(contentLength, length: length, offset: 0, maxUploadSize: services.limits.maxUploadSize)

        let now = services.now()
        // tus metadata too, so a tus HEAD of this upload names its file like any other.
        let rawMetadata = (["filename \(Data(filename.utf8).base64EncodedString())"]
            + (filetype.map { ["filetype \(Data($0.utf8).base64EncodedString())"] } ?? [])).joined(separator: ",")
        let upload = Upload(
            id: id, caseNumber: supportCase.number, filename: filename, filetype: filetype, rawMetadata: rawMetadata,
            length: length, offset: 0, state: .uploading, declaredSHA256: declared,
            digestState: SHA256Digest().savedState, sha256: nil, createdBy: uploader.accountableUserID, createdAt: now,
            updatedAt: now, completedAt: nil, purgedAt: nil, createdByDropToken: uploader.dropTokenID)
        // Blob, then row with the quotas and free space checked in its transaction (`UploadQuotas.create`).
        try await UploadQuotas.create(upload, reserving: length ?? contentLength ?? 0, services: services)
        services.metrics.uploadsCreated.increment()
        context.observation.upload(upload.id)
        context.logger.info("upload created", metadata: ["upload": "\(upload.id)", "case": "\(upload.caseNumber)",
                                                         "protocol": "ietf-\(ietf.version.number)"])
        let location = (context.publicOrigin ?? "") + "/api/v1/uploads/\(upload.id)"

        // Draft "Upload Creation" and "Draft Version Identification": the 104 goes out as soon as the upload
        // resource exists, before a byte of the body is read, and only to a client that named its interop version.
        if ietf.announced {
            var interim = HTTPResponse(status: Self.uploadResumptionSupported)
            interim.headerFields[.location] = location
            interim.headerFields[.uploadDraftInteropVersion] = String(ietf.version.number)
            if ietf.version.isCurrent, let limit = limit(for: upload) { interim.headerFields[.uploadLimit] = limit }
            await context.sendInterim(interim)
        }
        let current: Upload
        do {
            current = try await tus.asWriter(upload.id, readingBody: true, context: context) { writer in
                try await append(request.body, to: upload, complete: complete, request: request, writer: writer,
                                 context: context)
            }
        } catch {
            // A client that got the 104 holds the Location and resumes (draft example C); without it nothing of
            // this request could be resumed, so it is removed, as a failed tus creation is.
            if !ietf.announced {
                await tus.removeFailedCreation(upload.id, context: context)
                if let stopped = error as? CaseFilesError, stopped.code == CaseFilesError.shuttingDown().code {
                    throw CaseFilesError.shuttingDownBeforeCreation()
                }
            }
            throw error
        }
        var headers = stateFields(current, version: ietf.version)
        headers[.location] = location
        return Response(status: .created, headers: headers)
    }

    // MARK: - Offset retrieval (draft, "Offset Retrieval")

    func head(_ request: Request, context: AppRequestContext, fields ietf: IETFRequestFields) async throws -> Response {
        let (upload, _) = try await tus.authorizedUpload(context, for: .read)
        if upload.state != .verified { try tus.checkWritable(upload) }
        var headers = stateFields(upload, version: ietf.version)
        if let length = upload.length { headers[.uploadLength] = String(length) }
        headers[.cacheControl] = "no-store"
        return Response(status: .noContent, headers: headers)
    }

    // MARK: - Upload append (draft, "Upload Append")

    func patch(_ request: Request, context: AppRequestContext, fields ietf: IETFRequestFields) async throws -> Response {
        let started = MonotonicClock.nanoseconds()
        let fields = request.headers
        try Self.refuseContentEncoding(fields)
        if ietf.version.isCurrent, !Self.isPartialUpload(fields[.contentType]) {
            throw APIError(.unsupportedMediaType, "unsupported_media_type",
                           "Appends must be sent with `Content-Type: \(Self.partialUpload)`.")
        }
        guard let offset = ietf.offset else {
            throw APIError.invalidHeader(.uploadOffset, "is required; send the offset that HEAD returned")
        }
        // Draft -01's append defaults to complete (as NIOResumableUpload reads it); later drafts require the field.
        guard let complete = ietf.complete ?? (ietf.version.usesUploadIncomplete ? true : nil) else {
            throw Self.completeRequired(ietf.version)
        }
        let contentLength = try TusHeaders.count(.contentLength, in: fields)
        let newLength = try Self.length(declared: ietf.length, complete: complete, offset: offset, contentLength: contentLength)
        let declared = try TusHeaders.reprDigest(in: fields)
        let (found, supportCase) = try await tus.authorizedUpload(context, for: .append)
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }
        if found.state == .verified { throw Self.completed(found, contentLength: contentLength) }
        try tus.checkWritable(found)

        let admission = AppendRequest(offset: offset, newLength: newLength, declaredSHA256: declared,
                                      contentLength: contentLength)
        let upload: Upload
        do {
            upload = try await tus.asWriter(found.id, readingBody: true, context: context) { writer async throws -> Upload in
                let admitted = try await UploadAdmission.admit(admission, uploadID: found.id, services: services)
                return try await append(request.body, to: admitted, complete: complete, request: request, writer: writer,
                                        context: context, started: started)
            }
        } catch UploadError.alreadyComplete(let done) {
            throw Self.completed(done, contentLength: contentLength)
        }
        return Response(status: .noContent, headers: stateFields(upload, version: ietf.version))
    }

    // MARK: - The data path

    /// Appends `body` at the upload's offset (`UploadsController.appendBody`: the engine, `100 Continue`, the
    /// body deadline), then, when the client says this was the last part (`Upload-Complete: ?1`), completes an
    /// upload whose length was deferred: its length is where the body ended (draft "Length", indicator 1).
    /// - Throws: the engine's errors; `IETFError.inconsistentLength` when a last part ends short of a known length
    ///   (the bytes that came are kept).
    private func append(
        _ body: RequestBody, to upload: Upload, complete: Bool, request: Request, writer: UploadWriter,
        context: AppRequestContext, started: UInt64 = MonotonicClock.nanoseconds()
    ) async throws -> Upload {
        // RFC 9530 Content-Digest is checked on IETF appends as on tus ones; Content-Encoding was refused (415).
        let checksum = try DigestFields.requestDigest(in: request.headers)
        let current = try await tus.appendBody(body, to: upload, request: request, checksum: checksum, coding: nil,
                                               writer: writer, context: context, started: started)
        guard complete, current.state == .uploading else { return current }
        if let length = current.length {
            throw IETFError.inconsistentLength(
                "The request said it completes the upload, but its content ended at offset \(current.offset), short of "
                + "the upload's length of \(length) bytes. The bytes that came were kept; append the rest.")
        }
        let fixed = try await UploadAdmission.admit(
            AppendRequest(offset: current.offset, newLength: current.offset, declaredSHA256: nil, contentLength: 0),
            uploadID: current.id, services: services)
        return try await tus.appendBody(nil, to: fixed, request: request, checksum: nil, coding: nil, writer: writer,
                                        context: context)
    }

    // MARK: - Fields

    /// `Upload-Offset` and the completeness (`Upload-Complete`, or draft -01's inverse), and `Upload-Limit` from
    /// interop 8 on.
    private func stateFields(_ upload: Upload, version: InteropVersion) -> HTTPFields {
        var headers: HTTPFields = [.uploadOffset: String(upload.offset)]
        let complete = upload.state == .verified
        if version.usesUploadIncomplete {
            headers[.uploadIncomplete] = IETFRequestFields.serialize(!complete)
        } else {
            headers[.uploadComplete] = IETFRequestFields.serialize(complete)
        }
        if version.isCurrent, let limit = limit(for: upload) { headers[.uploadLimit] = limit }
        return headers
    }

    /// An upload's `Upload-Limit`: the maximum size, and while it takes bytes, the seconds until it expires.
    private func limit(for upload: Upload) -> String? {
        var limit = UploadLimit(maxSize: services.limits.maxUploadSize)
        if upload.state == .uploading {
            limit.maxAge = max(0, Int64(tus.expiresAt(upload).timeIntervalSince(services.now()).rounded(.down)))
        }
        let text = limit.serialized
        return text.isEmpty ? nil : text
    }

    /// The draft's length rule ("Length"): `Upload-Length`, or with `Upload-Complete: ?1` the offset plus
    /// `Content-Length`; both present must agree.
    /// - Returns: the length in bytes, nil when neither says it.
    /// - Throws: `IETFError.inconsistentLength`.
    static func length(declared: Int64?, complete: Bool, offset: Int64, contentLength: Int64?) throws -> Int64? {
        let fromContent = complete ? contentLength.map { offset + $0 } : nil
        if let declared, let fromContent, declared != fromContent {
            throw IETFError.inconsistentLength(
                "Upload-Length says \(declared) bytes, but Upload-Complete: ?1 with Content-Length \(contentLength ?? 0) "
                + "at offset \(offset) says \(fromContent). Send lengths that agree.")
        }
        return declared ?? fromContent
    }

    /// The file name from `Content-Disposition` (RFC 6266), held to the same rules as a tus `filename`; without
    /// one, `upload-<id>.bin`.
    static func filename(in fields: HTTPFields, id: String) throws -> String {
        guard let disposition = try TusHeaders.single(.contentDisposition, in: fields),
              let name = ContentDisposition.filename(disposition), !name.isEmpty
        else { return "upload-\(id).bin" }
        if let problem = UploadMetadata.filenameProblem(name) {
            throw APIError.badRequest("invalid_filename", "The filename \(problem). Rename the file and retry.")
        }
        return name
    }

    /// Content codings are not decoded yet: refused rather than stored coded under a name that hides it.
    static func refuseContentEncoding(_ fields: HTTPFields) throws {
        let codings = fields[values: .contentEncoding].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { $0 != "identity" }
        guard codings.isEmpty else {
            throw APIError(.unsupportedMediaType, "unsupported_content_encoding",
                           "Content-Encoding \(codings.joined(separator: ", ").prefix(64)) is not supported on resumable "
                           + "uploads; send the bytes without a content coding.")
        }
    }

    static func isPartialUpload(_ contentType: String?) -> Bool {
        contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() == partialUpload
    }

    static func completeRequired(_ version: InteropVersion) -> APIError {
        let field = version.usesUploadIncomplete ? "Upload-Incomplete" : "Upload-Complete"
        return APIError.badRequest("upload_complete_required",
                                   "Send \(field) (a Structured Field Boolean, ?1 or ?0) to say whether this request "
                                   + "carries the end of the upload.")
    }

    /// An append to a completed upload: without content, completed-upload; with content, an inconsistent
    /// length (draft "Upload Append").
    static func completed(_ upload: Upload, contentLength: Int64?) -> IETFError {
        if contentLength == 0 { return .completedUpload(id: upload.id, offset: upload.offset) }
        return .inconsistentLength("Upload \(upload.id) is already complete at \(upload.offset) bytes; content appended "
                                   + "to it would pass its length. Nothing was written.")
    }
}

/// The dispatch between the two protocols on the upload routes, first in their group: a request with
/// `Upload-Complete`, `Upload-Incomplete` or `Upload-Draft-Interop-Version` is the IETF draft's and is answered
/// here (authenticated and rate-limited as tus requests are); any other goes on to `TusMiddleware`, which
/// answers 412 to one without `Tus-Resumable`. `OPTIONS` (tus discovery) also advertises the draft's
/// `Accept-Patch` and `Upload-Limit` (draft "Limits").
struct ResumableUploadMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let controller: ResumableUploadController
    let auth: AuthMiddleware
    let rateLimit: RateLimitMiddleware

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .options {
            var response = try await next(request, context)
            response.headers[.acceptPatch] = ResumableUploadController.partialUpload
            response.headers[.uploadLimit] = controller.newUploadLimit.serialized
            return response
        }
        guard IETFRequestFields.isIETF(request.headers) else { return try await next(request, context) }
        var version = InteropVersion.newest
        var echo: HTTPFields = [:]
        do {
            let fields = try IETFRequestFields(request.headers)
            version = fields.version
            if fields.announced { echo[.uploadDraftInteropVersion] = String(version.number) }
            return try await auth.handle(request, context: context) { request, context in
                try await rateLimit.handle(request, context: context) { request, context in
                    var response = try await controller.respond(to: request, context: context, fields: fields)
                    response.headers.append(contentsOf: echo)
                    return response
                }
            }
        } catch {
            let (response, code) = IETFAnswer.response(for: error, version: version, request: request, logger: context.logger,
                                                       headers: echo, limit: controller.newUploadLimit)
            context.observation.error(code)
            return response
        }
    }
}
