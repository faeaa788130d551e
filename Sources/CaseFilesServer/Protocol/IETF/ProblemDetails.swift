import Foundation
import HTTPTypes
import Hummingbird
import Logging
import CaseFilesCore
import CaseFilesEngine

/// The IETF resumable-upload draft's own refusals, before they become answers (`IETFAnswer`).
enum IETFError: Error, Sendable {
    /// The request's `Upload-Offset` (`provided`) is not the upload's offset (`expected`), bytes.
    case mismatchingOffset(expected: Int64, provided: Int64)
    /// An append to a completed upload without content (draft, "Upload Append": completed-upload).
    case completedUpload(id: String, offset: Int64)
    /// Two length indications that disagree, or content appended to a completed upload (inconsistent-upload-length).
    case inconsistentLength(String)
}

/// An RFC 9457 problem details object, `application/problem+json`, carrying the project's stable `error` code
/// and `message` as members too, so a client that reads `{"error", "message"}` reads these the same way.
struct ProblemDetails: Sendable {
    static let contentType = "application/problem+json"
    /// The draft's problem types (IANA "HTTP Problem Types" registry, draft "Problem Types").
    static let mismatchingUploadOffset = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    static let completedUpload = "https://iana.org/assignments/http-problem-types#completed-upload"
    static let inconsistentUploadLength = "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"

    var type: String
    var title: String
    var error: APIError
    /// Extension members (RFC 9457 §3.2), integers only here.
    var extensions: [String: Int64] = [:]

    /// A problem the draft does not type: `about:blank`, titled by the status (RFC 9457 §4.2.1).
    init(plain error: APIError) {
        self.init(type: "about:blank", title: error.status.reasonPhrase, error: error)
    }

    init(type: String, title: String, error: APIError, extensions: [String: Int64] = [:]) {
        self.type = type
        self.title = title
        self.error = error
        self.extensions = extensions
    }

    func response(includeBody: Bool, headers extra: HTTPFields) -> Response {
        var headers = error.headers
        headers.append(contentsOf: extra)
        guard includeBody else { return Response(status: error.status, headers: headers) }
        headers[.contentType] = Self.contentType
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    var body: Data {
        var object: [String: Any] = [
            "type": type, "title": title, "status": Int(error.status.code), "error": error.code, "message": error.message,
        ]
        for (key, value) in extensions { object[key] = value }
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }
}

/// The one mapping of an error on an IETF route to its answer: the draft's three problem types where it defines
/// them, any other error as `APIError.init(mapping:)` says; as problem details from interop 8 on, as the plain
/// `{"error", "message"}` JSON for interop 3 (draft -01 has no problem types).
enum IETFAnswer {
    static func response(for error: any Error, version: InteropVersion, request: Request, logger: Logger,
                         headers: HTTPFields, limit: UploadLimit?) -> (Response, code: String) {
        let problem = problem(for: error, request: request, logger: logger)
        var extra = headers
        // Draft "Limits": a 413 caused by the upload limits carries them.
        if problem.error.status == .contentTooLarge, version.isCurrent, let limit { extra[.uploadLimit] = limit.serialized }
        let includeBody = request.method != .head
        if version.isCurrent {
            return (problem.response(includeBody: includeBody, headers: extra), problem.error.code)
        }
        var response = problem.error.response(includeBody: includeBody)
        response.headers.append(contentsOf: extra)
        return (response, problem.error.code)
    }

    static func problem(for error: any Error, request: Request, logger: Logger) -> ProblemDetails {
        switch error {
        case IETFError.mismatchingOffset(let expected, let provided), UploadError.offsetMismatch(let expected, let provided):
            var answer = APIError.offsetMismatch(expected: expected, got: provided)
            answer.headers[.uploadOffset] = String(expected)
            return ProblemDetails(type: ProblemDetails.mismatchingUploadOffset,
                                  title: "offset from request does not match offset of resource", error: answer,
                                  extensions: ["expected-offset": expected, "provided-offset": provided])
        case IETFError.completedUpload(let id, let offset):
            let answer = APIError(.badRequest, "upload_complete",
                                  "Upload \(id) is already complete (\(offset) bytes); it accepts no more data.",
                                  headers: [.uploadOffset: String(offset), .uploadComplete: "?1"])
            return ProblemDetails(type: ProblemDetails.completedUpload, title: "upload is already completed", error: answer)
        case IETFError.inconsistentLength(let why):
            let answer = APIError(.badRequest, "inconsistent_upload_length", why)
            return ProblemDetails(type: ProblemDetails.inconsistentUploadLength,
                                  title: "inconsistent length values for upload", error: answer)
        case UploadError.lengthFixed(let length):
            return problem(for: IETFError.inconsistentLength(
                "The upload's length is already \(length) bytes; this request indicates another. Send the same length, "
                + "or none."), request: request, logger: logger)
        case UploadError.bodyExceedsLength(let length):
            return problem(for: IETFError.inconsistentLength(
                "The content runs past the upload's length of \(length) bytes; nothing of it was kept. Send only the "
                + "remaining bytes."), request: request, logger: logger)
        default:
            return ProblemDetails(plain: APIError(mapping: error, request: request, logger: logger))
        }
    }
}
