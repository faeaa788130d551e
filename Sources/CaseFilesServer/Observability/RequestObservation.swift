import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import CaseFilesCore

/// What one request's log line and metrics need that only the handlers learn: the user, the upload, the
/// body bytes read, the error code. Shared by reference: the router hands its handlers copies of the
/// context, and `ObservingResponder`, outside the router, reads what they wrote.
public final class RequestObservation: Sendable {
    struct Facts {
        var userID: Int64?
        var uploadID: String?
        var bytesIn: Int64?
        var errorCode: String?
        var streamsBody = false
    }

    private let facts = NIOLockedValueBox(Facts())

    init() {}

    var snapshot: Facts { facts.withLockedValue { $0 } }

    /// The authenticated user (bearer token or signed link): its id is logged, never the credential.
    func user(_ user: User) { facts.withLockedValue { $0.userID = user.id } }
    func upload(_ id: String) { facts.withLockedValue { $0.uploadID = id } }
    /// Request body bytes the handler read (an upload's body, which may stop short of its Content-Length).
    func bytesIn(_ count: Int64) { facts.withLockedValue { $0.bytesIn = count } }
    /// The `error` code of the JSON answer.
    func error(_ code: String) { facts.withLockedValue { $0.errorCode = code } }
    /// The response body is streamed (a download): its log line and metrics wait until it has been written,
    /// and count the bytes written rather than the declared length.
    func streamsBody() { facts.withLockedValue { $0.streamsBody = true } }
}

/// `X-Request-Id`: a client's or proxy's id is kept when it is sane (1–128 visible ASCII characters, so it
/// cannot break a log line or smuggle a header), otherwise one is generated; either way it is logged and
/// echoed in the response.
enum RequestID {
    static let maxLength = 128

    static func accept(_ value: String?) -> String? {
        guard let value, !value.isEmpty, value.utf8.count <= maxLength,
              value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else { return nil }
        return value
    }
}

extension HTTPField.Name {
    static let xRequestID = Self("X-Request-Id")!
}

/// Outermost: one structured log line and the HTTP metrics per request, when its response ends (for a
/// streamed download, when its last byte is written or the connection is cut). Records the request id in
/// the request's logger, so every line logged for the request carries it.
struct ObservingResponder<Wrapped: HTTPResponder>: HTTPResponder where Wrapped.Context == AppRequestContext {
    typealias Context = AppRequestContext
    let wrapped: Wrapped
    let metrics: ServerMetrics
    let logger: Logger

    func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        let requestID = RequestID.accept(request.headers[.xRequestID]) ?? SecureRandom.identifier()
        var context = context
        context.logger[metadataKey: "request_id"] = .string(requestID)
        let finish = Finish(request: request, context: context, requestID: requestID, started: started,
                            metrics: metrics, logger: logger)
        var response: Response
        do {
            response = try await wrapped.respond(to: request, context: context)
        } catch {
            finish(status: 500, bytesOut: 0)  // Hummingbird answers an error that escaped the router with 500
            throw error
        }
        response.headers[.xRequestID] = requestID
        let status = Int(response.status.code)
        guard context.observation.snapshot.streamsBody else {
            finish(status: status, bytesOut: Int64(response.body.contentLength ?? 0))
            return response
        }
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            let counted = CountingBodyWriter(wrapped: writer)
            do {
                try await body.write(counted)
            } catch {
                finish(status: status, bytesOut: counted.count.withLockedValue { $0 })
                throw error
            }
            finish(status: status, bytesOut: counted.count.withLockedValue { $0 })
        }
        return response
    }

    /// Logs the line and counts the metrics of one request, once its response has ended.
    struct Finish: Sendable {
        let request: Request
        let context: AppRequestContext
        let requestID: String
        let started: ContinuousClock.Instant
        let metrics: ServerMetrics
        let logger: Logger

        func callAsFunction(status: Int, bytesOut: Int64) {
            let duration = ContinuousClock.now - started
            let facts = context.observation.snapshot
            // The router's template, never the raw path (which holds ids and, for links, nothing secret but
            // the query is never read here); requests no route matched share one label.
            let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched"
            // A body handlers did not count is the declared one, once the request was accepted (a refused
            // request's body is not read).
            let bytesIn = facts.bytesIn
                ?? (status < 400 ? request.headers[.contentLength].flatMap { Int64($0) } ?? 0 : 0)
            let method = request.method.rawValue
            metrics.requestFinished(method: method, route: route, status: status, duration: duration,
                                    bytesIn: bytesIn, bytesOut: bytesOut, errorCode: facts.errorCode)
            var metadata: Logger.Metadata = [
                "request_id": .string(requestID), "method": .string(method), "route": .string(route),
                "status": .stringConvertible(status), "bytes_in": .stringConvertible(bytesIn),
                "bytes_out": .stringConvertible(bytesOut),
                "duration_ms": .string(String(format: "%.3f", Double(duration.components.attoseconds) / 1e15
                                              + Double(duration.components.seconds) * 1000)),
            ]
            if let user = facts.userID { metadata["user_id"] = .stringConvertible(user) }
            if let upload = facts.uploadID { metadata["upload_id"] = .string(upload) }
            if let code = facts.errorCode { metadata["error"] = .string(code) }
            logger.info("request", metadata: metadata)
        }
    }
}

/// Counts the bytes of a streamed response body as they are written (an addition per 256 KiB buffer).
private struct CountingBodyWriter: ResponseBodyWriter {
    var wrapped: any ResponseBodyWriter
    let count = NIOLockedValueBox<Int64>(0)

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await wrapped.write(buffer)
        count.withLockedValue { $0 += Int64(buffer.readableBytes) }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await wrapped.finish(trailingHeaders)
    }
}

/// Inside the router, after routing: the upload a route names (`:id`), for the log line.
struct ObservationMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let id = context.parameters.get("id"), SecureRandom.isIdentifier(id) { context.observation.upload(id) }
        return try await next(request, context)
    }
}
