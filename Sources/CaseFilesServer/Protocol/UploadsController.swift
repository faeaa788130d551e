import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// The tus 1.0 protocol handler: knows HTTP and the upload state machine; bytes go to a `BlobStore`,
/// which knows neither, and state to `AppDatabase`.
struct UploadsController: Sendable {
    let services: AppServices

    static let extensions = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration"

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
        let user = try context.requireUser()
        let fields = request.headers

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
        let checksum = carriesData ? try TusHeaders.checksum(in: fields) : nil
        let contentLength = try TusHeaders.count(.contentLength, in: fields)

        guard let number = CaseNumber.normalise(context.parameters.get("number") ?? "") else {
            throw APIError.caseNotFound(context.parameters.get("number") ?? "")
        }
        let supportCase = try await authorizedCase(number, user: user, action: .useOwnUpload)
        guard !supportCase.isClosed else { throw services.cases.closedCaseError(supportCase.number) }
        // Everything the headers decide is decided before anything is created (tus creation-with-upload):
        // a request refused here leaves nothing behind, and gets its answer before `100 Continue`.
        let bodyLength = carriesData || length == 0 ? contentLength : nil  // any other body is not read
        try checkBodyFits(bodyLength, length: length, offset: 0)
        try checkFreeSpace(for: length ?? bodyLength ?? 0)

        let now = services.now()
        let upload = Upload(
            id: SecureRandom.identifier(), caseNumber: supportCase.number, filename: filename, filetype: filetype,
            rawMetadata: metadata.raw, length: length, offset: 0, state: .uploading, declaredSHA256: declared,
            digestState: SHA256Digest().savedState, sha256: nil, createdBy: user.id!, createdAt: now,
            updatedAt: now, completedAt: nil, purgedAt: nil)
        // Blob first, row second: a crash between them leaves an orphan file the startup sweep removes,
        // never a row without its file.
        try await services.blobs.create(id: upload.id)
        try await database.createUpload(upload)
        context.logger.info("upload created", metadata: ["upload": "\(upload.id)", "case": "\(upload.caseNumber)"])

        var headers: HTTPFields = [.location: "/api/v1/uploads/\(upload.id)"]
        var current = upload
        do {
            if upload.length == 0 {
                current = try await appendBody(nil, to: upload, request: request, checksum: nil, watch: ReceiveWatch(),
                                               context: context)
            } else if carriesData {
                let watch = ReceiveWatch()
                current = try await withWriterLock(upload.id, watch: watch, context: context) {
                    try await appendBody(request.body, to: upload, request: request, checksum: checksum, watch: watch,
                                         context: context)
                }
            }
        } catch {
            await removeFailedCreation(upload.id, context: context)
            throw error
        }
        if carriesData || upload.length == 0 { headers[.uploadOffset] = String(current.offset) }
        if current.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(current)) }
        return Response(status: .created, headers: headers)
    }

    /// A creation-with-upload request that fails after creating its upload (checksum mismatch, a body
    /// longer than declared, cut off, too slow, superseded, disk full, whole-file digest mismatch) never
    /// sent its `Location`, so the client can neither resume nor terminate what it made. It is removed,
    /// row and blob, even when bytes without `Upload-Checksum` were committed before a cut: without the
    /// URL they cannot be resumed. This runs only before the response, so a `201` sent is never undone;
    /// a verified upload is never removed. A blob whose removal fails is left to the orphan sweep.
    private func removeFailedCreation(_ id: String, context: AppRequestContext) async {
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
        let (upload, _) = try await authorizedUpload(context, mayModify: false)
        if upload.state != .verified { try checkWritable(upload) }
        var headers: HTTPFields = [.uploadOffset: String(upload.offset), .cacheControl: "no-store"]
        if let length = upload.length {
            headers[.uploadLength] = String(length)
        } else {
            headers[.uploadDeferLength] = "1"
        }
        if !upload.rawMetadata.isEmpty { headers[.uploadMetadata] = upload.rawMetadata }
        if upload.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(upload)) }
        return Response(status: .ok, headers: headers)
    }

    // MARK: - PATCH (tus core: append)

    @Sendable func patch(_ request: Request, context: AppRequestContext) async throws -> Response {
        let fields = request.headers
        guard fields[.contentType].map(Self.isOffsetStream) == true else { throw APIError.wrongContentType() }
        let offset = try TusHeaders.offset(in: fields)
        let newLength = try TusHeaders.count(.uploadLength, in: fields)
        let checksum = try TusHeaders.checksum(in: fields)
        let declared = try TusHeaders.reprDigest(in: fields)
        let (found, supportCase) = try await authorizedUpload(context, mayModify: true)
        guard !supportCase.isClosed else { throw services.cases.closedCaseError(supportCase.number) }
        try checkWritable(found)

        let watch = ReceiveWatch()
        let upload = try await withWriterLock(found.id, watch: watch, context: context) { () async throws -> Upload in
            // Re-read under the lock: the request we superseded may have committed more bytes.
            guard var upload = try await database.upload(id: found.id) else { throw APIError.uploadNotFound(found.id) }
            try checkWritable(upload)
            guard offset == upload.offset else { throw APIError.offsetMismatch(expected: upload.offset, got: offset) }
            if let newLength {
                if let length = upload.length, length != newLength {
                    throw APIError(.conflict, "length_fixed",
                                   "Upload-Length is already \(length) and cannot change; send it only to set a deferred length.")
                }
                if upload.length == nil {
                    guard newLength >= upload.offset else {
                        throw APIError.invalidHeader(.uploadLength, "is below the bytes already received (\(upload.offset))")
                    }
                    if let max = services.limits.maxUploadSize, newLength > max { throw APIError.uploadTooLarge(max: max) }
                    try checkFreeSpace(for: newLength - upload.offset)
                    // Decided before the length is recorded: a refused request changes nothing.
                    try checkBodyFits(try TusHeaders.count(.contentLength, in: fields), length: newLength, offset: upload.offset)
                    try await database.setUploadLength(id: upload.id, length: newLength, at: services.now())
                    upload.length = newLength
                }
            }
            if let declared {
                guard upload.declaredSHA256 == nil || upload.declaredSHA256 == declared else {
                    throw APIError.badRequest(
                        "conflicting_digest",
                        "Repr-Digest names a different SHA-256 than the one declared earlier (\(upload.declaredSHA256!)).")
                }
                if upload.declaredSHA256 == nil {
                    try await database.declareSHA256(id: upload.id, sha256: declared)
                    upload.declaredSHA256 = declared
                }
            }
            return try await appendBody(request.body, to: upload, request: request, checksum: checksum, watch: watch,
                                        context: context)
        }
        var headers: HTTPFields = [.uploadOffset: String(upload.offset)]
        if upload.state == .uploading { headers[.uploadExpires] = HTTPDate.format(expiresAt(upload)) }
        return Response(status: .noContent, headers: headers)
    }

    // MARK: - DELETE (termination)

    @Sendable func delete(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (found, _) = try await authorizedUpload(context, mayModify: true)
        try await withWriterLock(found.id, context: context) {
            guard let upload = try await database.upload(id: found.id) else { throw APIError.uploadNotFound(found.id) }
            if upload.state == .uploading { try checkWritable(upload) }
            switch upload.state {
            case .uploading:
                try await database.terminateUpload(id: upload.id, at: services.now())
                try await services.blobs.remove(id: upload.id)
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

    // MARK: - The data path: socket → checksum → disk → fsync → commit → answer

    /// Appends one request body at the upload's committed offset. A body with `Upload-Checksum` is
    /// all-or-nothing; one without keeps whatever arrived before a cut. Returns the committed upload.
    /// The caller holds the upload's writer lock.
    private func appendBody(
        _ body: RequestBody?, to upload: Upload, request: Request,
        checksum: (ChecksumAlgorithm, [UInt8])?, watch: ReceiveWatch, context: AppRequestContext
    ) async throws -> Upload {
        let contentLength = try TusHeaders.count(.contentLength, in: request.headers)
        try checkBodyFits(contentLength, length: upload.length, offset: upload.offset)
        let room = roomLeft(length: upload.length, offset: upload.offset)
        guard let restored = SHA256Digest(savedState: upload.digestState) else {
            throw StorageError.io(operation: "restore digest state", errno: 0)
        }
        let appender = try await services.blobs.openForAppend(id: upload.id, at: upload.offset)
        let sink = ChunkSink(chunkDigest: checksum.map { ChunkDigest($0.0) }, fileDigest: restored, appender: appender)
        // The one place `100 Continue` is sent: every check the headers decide has passed (the offset and
        // length under the writer lock, the room for Content-Length, the case, the permissions). RFC 9110
        // §10.1.1: a final status the headers decide is sent at once, so the client never sends the body.
        // From here the body is read under the upload's rate watchdog, not the connection's body deadline;
        // a request refused before this line keeps that deadline (a refused client may never send its body).
        if body != nil {
            await context.takeOverBodyDeadline()
            await context.sendContinueIfExpected()
        }

        var interruption: (any Error)?
        var writeFailure: (any Error)?
        var overran = false
        if let body {
            do {
                for try await buffer in body {
                    if let room, sink.received + Int64(buffer.readableBytes) > room.bytes {
                        overran = true
                        break
                    }
                    watch.add(buffer.readableBytes)
                    do { try await sink.consume(buffer) } catch { writeFailure = error; break }
                }
            } catch {
                interruption = error
            }
            // Whatever arrived is kept, even after a cut: the last batch is written here.
            if !overran, writeFailure == nil {
                do { try await sink.flush() } catch { writeFailure = error }
            }
        }
        if let writeFailure {
            // The running digest may already cover bytes the disk refused, so nothing of this request counts.
            try? await appender.discard()
            throw describe(writeFailure, watch)
        }
        let received = appender.position - appender.start
        if interruption == nil, Task.isCancelled || (contentLength.map { received < $0 } ?? false) {
            interruption = CancellationError()
        }

        if overran, let room {
            try await appender.discard()
            throw room.refusal
        }
        let fileDigest = sink.fileDigest
        if let checksum, let chunkDigest = sink.chunkDigest, interruption != nil || chunkDigest.finalize() != checksum.1 {
            try await appender.discard()
            if let interruption { throw describe(interruption, watch) }
            context.logger.notice("checksum mismatch", metadata: ["upload": "\(upload.id)", "offset": "\(upload.offset)"])
            throw APIError.checksumMismatch(checksum.0, offset: upload.offset)
        }

        // Commit what arrived, even after a cut, in a task of its own so a cancelled request still
        // finishes making its verified bytes durable and recorded.
        let services = self.services
        let committed: Upload
        do {
            committed = try await Task {
                try await Self.commit(appender: appender, upload: upload, fileDigest: fileDigest, services: services)
            }.value
        } catch {
            // Nothing past the committed offset counts; dropping it now also gives back the space when the
            // disk is full (SQLite needs a little to record anything). The offset stays at the last durable byte.
            try? await appender.discard()
            throw describe(interruption.map { $0 as? StorageError == .noSpace ? $0 : error } ?? error, watch)
        }
        // A request stopped after its last byte completed the upload answers the completion.
        if let interruption, committed.state == .uploading { throw describe(interruption, watch) }
        if committed.state == .failed {
            throw APIError.wholeFileDigestMismatch(declared: committed.declaredSHA256 ?? "", computed: committed.sha256 ?? "")
        }
        if committed.state == .verified {
            context.logger.info("upload verified", metadata: ["upload": "\(upload.id)", "sha256": "\(committed.sha256!)"])
        }
        return committed
    }

    /// fsync, then one SQLite transaction, then (on completion) the verdict: the order that makes
    /// an acknowledged byte survive any crash.
    private static func commit(
        appender: BlobAppender, upload: Upload, fileDigest: SHA256Digest, services: AppServices
    ) async throws -> Upload {
        var upload = upload
        let newOffset = appender.position
        if newOffset > upload.offset { try await appender.sync() }
        Failpoint.hit("append.after-fsync")
        var completion: UploadCompletion?
        if let length = upload.length, newOffset == length {
            let sha256 = fileDigest.finalize().hexString
            upload.sha256 = sha256
            if let declared = upload.declaredSHA256, declared != sha256 {
                completion = .failed(sha256: sha256)
                upload.state = .failed
            } else {
                completion = .verified(sha256: sha256)
                upload.state = .verified
            }
        } else if newOffset == upload.offset {
            return upload
        }
        let now = services.now()
        if completion != nil { Failpoint.hit("complete.before-commit") }
        try await services.database.recordAppend(
            id: upload.id, from: upload.offset, to: newOffset, digestState: fileDigest.savedState,
            completion: completion, at: now)
        Failpoint.hit("append.after-commit")
        upload.offset = newOffset
        upload.digestState = fileDigest.savedState
        upload.updatedAt = now
        if completion != nil { upload.completedAt = now }
        if upload.state == .failed { try? await services.blobs.remove(id: upload.id) }
        return upload
    }

    private func describe(_ error: any Error, _ watch: ReceiveWatch) -> any Error {
        switch error {
        case StorageError.noSpace: APIError.insufficientStorage("the disk filled while writing")
        case let closed as CaseClosedDuringUpload: APIError(services.cases.closedCaseError(closed.caseNumber))
        case _ where watch.wasCutOff:
            APIError.tooSlow(minimumRate: services.limits.minReceiveRate, window: services.limits.stallWindow)
        case is CancellationError: APIError.superseded()
        default: error
        }
    }

    // MARK: - Helpers

    /// Runs `operation` as the upload's only writer, asking any request already writing it to stop first.
    private func withWriterLock<T: Sendable>(
        _ uploadID: String, watch: ReceiveWatch? = nil, context: AppRequestContext,
        _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let worker = NIOLockedValueBox<(stopped: Bool, cancel: (@Sendable () -> Void)?)>((false, nil))
        let stop: @Sendable () -> Void = {
            let cancel = worker.withLockedValue { state -> (@Sendable () -> Void)? in
                state.stopped = true
                return state.cancel
            }
            cancel?()
        }
        guard let lease = await services.locks.acquire(uploadID, stop: stop) else { throw APIError.superseded() }
        let task = Task { try await operation() }
        let stoppedAlready = worker.withLockedValue { state in
            state.cancel = { task.cancel() }
            return state.stopped
        }
        if stoppedAlready { task.cancel() }
        // A client that stops sending, or trickles, is cut off; what it sent and verified is kept.
        let limits = services.limits
        let watchdog = watch.map { watch in
            Task {
                var seen = watch.bytes
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(limits.stallWindow))
                    if Task.isCancelled { return }
                    let now = watch.bytes
                    if Double(now - seen) < limits.minReceiveRate * limits.stallWindow {
                        watch.markCutOff()
                        task.cancel()
                        return
                    }
                    seen = now
                }
            }
        }
        defer { watchdog?.cancel() }
        // On SIGTERM the server waits for in-flight requests; an upload may take hours, so it is asked
        // to stop now: it commits what it verified and answers, and the client resumes later.
        let result = await withGracefulShutdownHandler {
            await withTaskCancellationHandler { await task.result } onCancel: { task.cancel() }
        } onGracefulShutdown: {
            task.cancel()
        }
        await services.locks.release(lease)
        // A body read was stopped part-way: its stream is gone, so the connection cannot be reused.
        if watch != nil && task.isCancelled { await context.closeConnectionAfterResponse() }
        do {
            return try result.get()
        } catch is CancellationError {
            // Stopped before its body was read (a database call noticed first): still just superseded.
            throw watch?.wasCutOff == true
                ? APIError.tooSlow(minimumRate: limits.minReceiveRate, window: limits.stallWindow)
                : APIError.superseded()
        }
    }

    private func authorizedCase(_ number: String, user: User, action: AccessPolicy.Action) async throws -> SupportCase {
        guard let supportCase = try await database.supportCase(number: number) else { throw APIError.caseNotFound(number) }
        switch AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: action) {
        case .allow: return supportCase
        case .hidden: throw APIError.caseNotFound(number)
        case .forbidden: throw APIError.forbidden("do this on case \(number)")
        }
    }

    /// The upload named in the path, if the caller may see it (and, with `mayModify`, change it).
    private func authorizedUpload(_ context: AppRequestContext, mayModify: Bool) async throws -> (Upload, SupportCase) {
        let user = try context.requireUser()
        let id = context.parameters.get("id") ?? ""
        guard SecureRandom.isIdentifier(id), let (upload, supportCase) = try await database.uploadWithCase(id: id) else {
            throw APIError.uploadNotFound(String(id.prefix(64)))
        }
        let action: AccessPolicy.Action =
            !mayModify ? .readCase : upload.createdBy == user.id ? .useOwnUpload : .modifyOthersUpload
        switch AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: action) {
        case .allow: return (upload, supportCase)
        case .hidden: throw APIError.uploadNotFound(id)
        case .forbidden: throw APIError.forbidden("change upload \(id), which another user created")
        }
    }

    /// tus expiration: an unfinished upload lives `uploadExpiry` past its last progress.
    private func expiresAt(_ upload: Upload) -> Date {
        upload.updatedAt.addingTimeInterval(services.limits.uploadExpiry)
    }

    private func checkWritable(_ upload: Upload) throws {
        switch upload.state {
        case .uploading:
            // Expired even if the reclaiming service has not run yet: the clock decides, not the sweep.
            if upload.isExpired(at: services.now(), expiry: services.limits.uploadExpiry) {
                var expired = upload
                expired.state = .expired
                throw APIError.uploadGone(expired)
            }
        case .verified: throw APIError.alreadyComplete(upload)
        case .failed, .terminated, .expired, .purged: throw APIError.uploadGone(upload)
        }
    }

    /// How many more bytes an upload at `offset` can take, and the answer to a body with more: up to its
    /// `Upload-Length` (413 `body_exceeds_length`), or for a deferred length up to `--max-upload-size`
    /// (413 `upload_too_large`). Nil: a deferred length on a server without a maximum takes any body.
    private func roomLeft(length: Int64?, offset: Int64) -> (bytes: Int64, refusal: APIError)? {
        if let length { return (length - offset, APIError.bodyExceedsLength(length)) }
        if let max = services.limits.maxUploadSize { return (max - offset, APIError.uploadTooLarge(max: max)) }
        return nil
    }

    /// Refuses a body whose `Content-Length` (bytes) is more than the upload has room for, before a byte is read.
    private func checkBodyFits(_ contentLength: Int64?, length: Int64?, offset: Int64) throws {
        if let room = roomLeft(length: length, offset: offset), let contentLength, contentLength > room.bytes {
            throw room.refusal
        }
    }

    private func checkFreeSpace(for bytes: Int64) throws {
        let available = try services.blobs.availableBytes()
        if bytes > available - services.limits.minFreeBytes {
            throw APIError.insufficientStorage(
                "\(bytes) bytes requested, \(max(0, available - services.limits.minFreeBytes)) available")
        }
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
