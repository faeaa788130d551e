import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import Hummingbird
import CaseFilesCore

/// Every error the API answers with: an HTTP status, a stable machine-readable code and a message that
/// says what went wrong and what to do. Encoded as `{"error": code, "message": message}`.
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        response(includeBody: request.method != .head)
    }

    /// HEAD responses carry the status and headers only (RFC 9110 §9.3.2). `Cache-Control: no-store` and
    /// `nosniff` are added to every answer by `ResponseHeadersResponder`.
    public func response(includeBody: Bool) -> Response {
        var headers = self.headers
        guard includeBody else { return Response(status: status, headers: headers) }
        headers[.contentType] = Self.contentType
        return Response(status: status, headers: headers, body: .init(byteBuffer: jsonBody))
    }

    static let contentType = "application/json; charset=utf-8"

    /// The same answer as an HTTP/1 head and body, for the channel handlers that answer below the router
    /// (`HTTP1ConformanceHandler`, `ConnectionGuardHandler`), where `ResponseHeadersResponder` does not run:
    /// so it carries `nosniff` itself, and `Connection: close` because those answers end the connection.
    func http1Response(version: HTTPVersion) -> (head: HTTPResponseHead, body: ByteBuffer) {
        let body = jsonBody
        var fields = HTTPHeaders()
        fields.add(name: "Content-Type", value: Self.contentType)
        fields.add(name: "Content-Length", value: String(body.readableBytes))
        fields.add(name: "Cache-Control", value: "no-store")
        fields.add(name: "X-Content-Type-Options", value: "nosniff")
        fields.add(name: "Connection", value: "close")
        for field in headers { fields.add(name: field.name.canonicalName, value: field.value) }
        let status = HTTPResponseStatus(statusCode: Int(self.status.code), reasonPhrase: self.status.reasonPhrase)
        return (HTTPResponseHead(version: version, status: status, headers: fields), body)
    }

    /// `{"error": code, "message": message}`: also written by the channel handlers that answer outside the
    /// router (`HTTP1ConformanceHandler`, `ConnectionGuardHandler`).
    var jsonBody: ByteBuffer {
        ByteBuffer(bytes: (try? JSONEncoder.sorted.encode(["error": code, "message": message])) ?? Data())
    }
}

extension JSONEncoder {
    static let sorted: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()
}

extension APIError: CustomStringConvertible {
    public var description: String { message }
}

// MARK: - The domain's errors, as HTTP

extension APIError {
    /// RFC 4918 §11.5; HTTPTypes has no name for it.
    static let insufficientStorageStatus = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")

    /// How long a client is asked to wait before retrying a request refused with 503 (a restart takes a
    /// few seconds); sent as `Retry-After` (RFC 9110 §10.2.3).
    static let retryAfterSeconds = 5

    /// The one mapping from the domain's error kinds to HTTP statuses.
    init(_ error: CaseFilesError) {
        let status: HTTPResponse.Status = switch error.kind {
        case .invalid: .badRequest
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .conflict: .conflict
        case .gone: .gone
        case .insufficientStorage: Self.insufficientStorageStatus
        case .unavailable: .serviceUnavailable
        }
        // RFC 9110 §15.6.4: a 503 may say when to retry; the request itself was fine.
        let headers: HTTPFields = error.kind == .unavailable ? [.retryAfter: String(Self.retryAfterSeconds)] : [:]
        self.init(status, error.code, error.message, headers: headers)
    }
}

// MARK: - The error table

extension APIError {
    static func missingToken() -> APIError {
        APIError(.unauthorized, "missing_token",
                 "This endpoint needs an access token: send `Authorization: Bearer <token>`.",
                 headers: [.wwwAuthenticate: "Bearer"])
    }

    static func invalidToken() -> APIError {
        APIError(.unauthorized, "invalid_token",
                 "The access token is unknown or was revoked. Ask your administrator for a new one.",
                 headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
    }

    static func forbidden(_ what: String) -> APIError { APIError(CaseFilesError.forbidden(what)) }

    /// A drop credential used where only a user's token works (issue #20).
    static func dropCredentialUploadOnly(_ caseNumber: String) -> APIError {
        APIError(.forbidden, "drop_credential_upload_only",
                 "A drop credential can only upload files into case \(caseNumber) (and see the uploads it made); "
                 + "use a user's own token for anything else.")
    }

    /// An expired, revoked or closed-case drop credential, or Basic credentials that are not one (issue #20).
    static func invalidDropCredential() -> APIError {
        APIError(.unauthorized, "invalid_token",
                 "The drop credential is unknown, expired or revoked, or its case is closed, or the user name is not "
                 + "its case number. Ask your support engineer for a new one.",
                 headers: [.wwwAuthenticate: "Basic realm=\"casefiles\", charset=\"UTF-8\""])
    }

    static func dropTokenNotFound(_ id: String, caseNumber: String) -> APIError {
        APIError(.notFound, "drop_token_not_found", "Case \(caseNumber) has no drop credential \(id.prefix(32)).")
    }

    /// The curl front-end's HEAD or `Content-Range` PUT found nothing to continue (issue #20).
    static func noUnfinishedUpload(_ filename: String) -> APIError {
        APIError(.notFound, "no_unfinished_upload",
                 "You have no unfinished upload named \(filename.prefix(200)) in this case: send a PUT without "
                 + "Content-Range (curl -T FILE URL) to start one.")
    }

    static func caseNotFound(_ number: String) -> APIError { APIError(CaseFilesError.caseNotFound(number)) }

    static func uploadNotFound(_ id: String) -> APIError {
        APIError(.notFound, "upload_not_found", "No upload \(id) is visible to you. Create a new upload.")
    }

    static func uploadGone(_ upload: Upload) -> APIError {
        if upload.state == .purged {
            let day = upload.purgedAt.map(CaseLifecycle.day) ?? "an earlier date"
            return APIError(.gone, "purged",
                            "\(upload.filename) was purged on \(day) under the retention policy: all data of a case is "
                            + "deleted once it has been closed for the retention period. Ask the customer to upload it again "
                            + "to a new case if it is still needed.")
        }
        let why = switch upload.state {
        case .failed: "its whole-file SHA-256 did not match the declared digest"
        case .terminated: "it was deleted"
        case .expired: "it made no progress for longer than the upload expiry"
        case .purged: "its case's data was purged under the retention policy"
        default: "it is no longer available"
        }
        return APIError(.gone, "upload_gone",
                        "Upload \(upload.id) is gone because \(why). Create a new upload to send the file again.")
    }

    static func invalidHeader(_ name: HTTPField.Name, _ problem: String) -> APIError {
        APIError(.badRequest, "invalid_header", "Header \(name.rawName): \(problem).")
    }

    static func offsetMismatch(expected: Int64, got: Int64) -> APIError {
        APIError(.conflict, "offset_mismatch",
                 "Upload-Offset is \(got) but the upload is at \(expected). Send a HEAD request and resume from "
                 + "the Upload-Offset it returns.",
                 headers: [.uploadOffset: String(expected)])
    }

    static func alreadyComplete(_ upload: Upload) -> APIError {
        APIError(.conflict, "upload_complete",
                 "Upload \(upload.id) is already complete (\(upload.offset) bytes); it accepts no more data.",
                 headers: [.uploadOffset: String(upload.offset)])
    }

    static func superseded() -> APIError {
        APIError(.conflict, "superseded",
                 "A newer request for this upload took over; this one stopped and kept what it had committed. "
                 + "Send a HEAD request and resume from its Upload-Offset.")
    }

    /// The body ended before all of it arrived (the client went away); few clients are left to read this.
    static func bodyIncomplete() -> APIError {
        APIError(.badRequest, "body_incomplete",
                 "The request body ended before all of it arrived; the bytes that arrived were kept unless the "
                 + "request carried Upload-Checksum. Send a HEAD request and resume from its Upload-Offset.")
    }

    /// `GET /readyz` when a check failed; `failed` names each (`shutdown`, `database`, `free_space`) with what it found.
    static func notReady(_ failed: [String]) -> APIError {
        APIError(.serviceUnavailable, "not_ready",
                 "Not ready: \(failed.joined(separator: "; ")). Send traffic elsewhere until /readyz answers 200.")
    }

    static func tooSlow(minimumRate: Double, window: TimeInterval) -> APIError {
        APIError(.requestTimeout, "too_slow",
                 "The request body arrived slower than \(Int(minimumRate)) bytes/s for \(Int(window)) s and was stopped; "
                 + "the bytes that arrived were kept unless the request carried Upload-Checksum. Send a HEAD request "
                 + "and resume from its Upload-Offset.")
    }

    static func wrongContentType() -> APIError {
        APIError(.unsupportedMediaType, "unsupported_media_type",
                 "Upload data must be sent with `Content-Type: application/offset+octet-stream`.")
    }

    static func checksumMismatch(_ algorithm: ChecksumAlgorithm, offset: Int64) -> APIError {
        APIError(HTTPResponse.Status(code: 460, reasonPhrase: "Checksum Mismatch"), "checksum_mismatch",
                 "The \(algorithm.rawValue) of the request body did not match its Upload-Checksum or Content-Digest; "
                 + "none of its bytes were kept. Resend the chunk from offset \(offset).",
                 headers: [.uploadOffset: String(offset)])
    }

    /// RFC 9530 `Content-Digest` naming only algorithms the server cannot compute (`names`: what it named).
    static func unsupportedContentDigest(named names: [String]) -> APIError {
        let named = names.isEmpty ? "no algorithm" : names.prefix(8).map { String($0.prefix(32)) }.joined(separator: ", ")
        return .badRequest("unsupported_digest_algorithm",
                           "Content-Digest names \(named), none of which this server verifies; it verifies sha-256 and "
                           + "sha-512: send `Content-Digest: sha-256=:<base64>:` (or sha-512), or leave the header out.")
    }

    /// `Upload-Checksum` and `Content-Digest` on one request: one per-request digest is checked.
    static func twoContentChecksums() -> APIError {
        .badRequest("two_content_checksums",
                    "Send either Upload-Checksum or Content-Digest for a request's bytes, not both.")
    }

    static func wholeFileDigestMismatch(declared: String, computed: String) -> APIError {
        APIError(HTTPResponse.Status(code: 422, reasonPhrase: "Unprocessable Content"), "whole_file_digest_mismatch",
                 "The file's SHA-256 is \(computed) but \(declared) was declared, so it was not attached. "
                 + "Check the file and upload it again.")
    }

    /// A `Content-Encoding` other than gzip, deflate or identity (RFC 9110 §15.5.16; §12.5.3: the 415 lists
    /// the codings that are accepted in `Accept-Encoding`).
    static func unsupportedContentEncoding(_ value: String) -> APIError {
        APIError(.unsupportedMediaType, "unsupported_content_encoding",
                 "Content-Encoding \(value) is not supported: send the body as it is, or as one complete stream of "
                 + "one of: \(ContentCoding.supportedList).",
                 headers: [.acceptEncoding: ContentCoding.supportedList])
    }

    /// A compressed body that is not one complete stream of its coding (`casefiles-content-encoding`).
    static func contentEncodingInvalid(_ coding: ContentCoding, problem: String, offset: Int64) -> APIError {
        APIError(.badRequest, "invalid_content_encoding",
                 "The request body is not one complete \(coding.rawValue) stream: \(problem). None of its bytes were "
                 + "kept. Resend the chunk from offset \(offset), compressed as one whole stream per request.",
                 headers: [.uploadOffset: String(offset)])
    }

    static func compressionRatioExceeded(limit: Int) -> APIError {
        APIError(.contentTooLarge, "compression_ratio_exceeded",
                 "The compressed request body expands to more than \(limit) bytes per byte sent, more than this server "
                 + "accepts; none of its bytes were kept. Send this data without Content-Encoding.")
    }

    static func bodyExceedsLength(_ length: Int64) -> APIError {
        APIError(.contentTooLarge, "body_exceeds_length",
                 "The request body runs past the upload's length of \(length) bytes; nothing was written. "
                 + "Send only the remaining bytes.")
    }

    static func uploadTooLarge(max: Int64) -> APIError {
        APIError(.contentTooLarge, "upload_too_large",
                 "Uploads on this server may be at most \(max) bytes.")
    }

    /// Not enough free space for an upload's bytes: the figures are logged for the operator
    /// (`APIError.init(mapping:)`), never told to the client.
    static func notEnoughSpace() -> APIError {
        APIError(Self.insufficientStorageStatus, "insufficient_storage",
                 "The server does not have enough free disk space for this upload right now; nothing of this request "
                 + "was kept. Retry later (uploads resume from the Upload-Offset that HEAD returns), or tell the "
                 + "service's operator.")
    }

    /// A user made more state-changing requests than `--rate-limit` allows (RFC 6585 §4).
    static func rateLimited(limit: Int, retryAfter: Int) -> APIError {
        APIError(.tooManyRequests, "rate_limited",
                 "You made more than \(limit) changes a minute (limit: state-changing requests per user). Wait "
                 + "\(retryAfter) s, as Retry-After says, then retry.",
                 headers: [.retryAfter: String(retryAfter)])
    }

    static func insufficientStorage(_ detail: String) -> APIError {
        APIError(Self.insufficientStorageStatus, "insufficient_storage",
                 "The server is out of disk space (\(detail)). The upload kept every byte acknowledged so far; "
                 + "retry later and resume from the Upload-Offset that HEAD returns.")
    }

    static func unsupportedVersion() -> APIError {
        APIError(.preconditionFailed, "unsupported_tus_version",
                 "This server speaks tus 1.0.0 only: send `Tus-Resumable: 1.0.0`.",
                 headers: [.tusVersion: TusProtocol.version])
    }

    /// A header section over the parser's limits (RFC 6585 §5).
    static func headerSectionTooLarge() -> APIError {
        APIError(.init(code: 431, reasonPhrase: "Request Header Fields Too Large"), "header_section_too_large",
                 "The request's header section is larger than this server accepts "
                 + "(\(ConnectionLimits.maxHeaderSectionBytes / 1024) KiB, at most \(ConnectionLimits.maxHeaderFields) "
                 + "fields). Send fewer or shorter headers.")
    }

    /// The HTTP/1.1 parser refused the request before it was routed (RFC 9112).
    static func malformedRequest(_ detail: String) -> APIError {
        APIError(.badRequest, "malformed_request",
                 "The request is not valid HTTP/1.1 (\(detail)). Fix the client or the proxy in front of it.")
    }

    /// A request body that did not finish within `--body-timeout` (only bodies no upload handler reads).
    static func bodyTimedOut(_ timeout: Duration) -> APIError {
        APIError(.requestTimeout, "body_timeout",
                 "The request body did not arrive within \(timeout.components.seconds) s; the connection is closed. "
                 + "Send the whole request at once and retry.")
    }

    // MARK: Archive entries (EntriesController)

    static func entryNotFound(_ path: String) -> APIError {
        APIError(.notFound, "entry_not_found",
                 "The archive has no entry \(path.prefix(200)); list them with GET …/entries?prefix=.")
    }

    /// A path several tar entries share: the client picks one with `?n=`.
    static func ambiguousEntry(_ path: String, numbers: [Int]) -> APIError {
        APIError(.conflict, "ambiguous_entry",
                 "\(numbers.count) entries are named \(path.prefix(200)) (numbers \(numbers.map(String.init).joined(separator: ", "))); "
                 + "pick one with ?n=NUMBER.")
    }

    static func entryNotReadable(_ number: Int, _ why: String) -> APIError {
        APIError(.conflict, "entry_not_readable", "Entry \(number) cannot be read: \(why).")
    }

    /// The index is not there (yet, or at all) for this attachment.
    static func indexNotReady(_ state: BundleIndexState, reason: String?) -> APIError {
        switch state {
        case .pending:
            APIError(.conflict, "index_pending", "The archive is still being indexed; try again in a moment.",
                     headers: [.retryAfter: "5"])
        case .notAnArchive:
            APIError(.conflict, "not_an_archive",
                     "This attachment is not an archive the service reads (zip, tar, tar.gz, gzip); download it whole.")
        case .unreadable, .ready:
            APIError(.conflict, "archive_unreadable",
                     "The archive cannot be read in place: \(reason ?? "unknown reason"); download it whole.")
        }
    }

    static func badRequest(_ code: String, _ message: String) -> APIError {
        APIError(.badRequest, code, message)
    }
}

// MARK: - Signed download links

extension APIError {
    static func invalidLink() -> APIError {
        APIError(.forbidden, "invalid_link", "This download link is invalid or has expired; ask for a new one.")
    }

    /// A link serves at most `budget` bytes (twice the file): one download and its resumption.
    static func linkUsedUp(budget: Int64) -> APIError {
        APIError(.gone, "link_used_up",
                 "This download link has served its \(budget) bytes (twice the file's size, for resuming one download). "
                 + "Ask for a new link.")
    }
}
