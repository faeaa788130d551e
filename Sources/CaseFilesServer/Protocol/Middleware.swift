import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// The one place that turns errors into responses (`APIError.init(mapping:)`), for every route; `TusMiddleware`
/// maps with the same function inside the tus routes so their error responses still carry `Tus-Resumable`.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let answer = APIError(mapping: error, request: request, logger: context.logger)
            context.observation.error(answer.code)
            return answer.response(includeBody: request.method != .head)
        }
    }
}

extension APIError {
    /// Every error a handler can throw, as the answer to send: `APIError`s as they are, the domain's errors
    /// by kind (503 with `Retry-After` while shutting down), the upload engine's by case, a full disk (blob or SQLite) as 507, Hummingbird's own errors (unknown route, body too large)
    /// as JSON, and anything else as a logged 500.
    init(mapping error: any Error, request: Request, logger: Logger) {
        switch error {
        case let error as APIError:
            self = error
        case let error as CaseFilesError where error.kind == .insufficientStorage:
            // A full disk under the metadata store (`CaseFilesError.databaseFull`): the operator must know.
            logger.error("disk full", metadata: ["error": "\(error.code)", "path": "\(request.uri.path)"])
            self.init(error)
        case let error as CaseFilesError:
            self.init(error)
        case UploadError.insufficientSpace(let requested, let available):
            // The operator needs the figures; a client must not learn the server's free space.
            logger.warning("not enough free space for an upload", metadata: [
                "requestedBytes": "\(requested)", "availableBytes": "\(available)", "path": "\(request.uri.path)"])
            self = Self.translate(UploadError.insufficientSpace(requested: requested, available: available))
        case let error as UploadError:
            self = Self.translate(error)
        case let error as HTTPError:
            self = Self.translate(error)
        case StorageError.noSpace:
            logger.error("disk full", metadata: ["path": "\(request.uri.path)"])
            self = APIError.insufficientStorage("the disk is full")
        case is NIOTooManyBytesError:
            self = APIError(.contentTooLarge, "body_too_large", "The request body is too large for this endpoint.")
        case let error as HTTPParserError:
            // The body broke HTTP framing part-way (a bad chunk size, say); the headers were fine.
            self = APIError.badRequest("malformed_body", "The request body is not valid HTTP framing: \(error).")
        default:
            logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))", "path": "\(request.uri.path)"])
            self = Self.internalError
        }
    }

    static let internalError = APIError(
        .internalServerError, "internal_error",
        "The server failed unexpectedly; the error was logged. Retry, and report it if it persists.")

    /// The upload engine's refusals, as the table's answers.
    static func translate(_ error: UploadError) -> APIError {
        switch error {
        case .superseded: .superseded()
        case .tooSlow(let minimumRate, let window): .tooSlow(minimumRate: minimumRate, window: window)
        case .bodyIncomplete: .bodyIncomplete()
        case .checksumMismatch(let algorithm, let offset): .checksumMismatch(algorithm, offset: offset)
        case .bodyExceedsLength(let length): .bodyExceedsLength(length)
        case .uploadTooLarge(let max): .uploadTooLarge(max: max)
        case .wholeFileDigestMismatch(let declared, let computed):
            .wholeFileDigestMismatch(declared: declared, computed: computed)
        case .contentEncodingInvalid(let coding, let problem, let offset):
            .contentEncodingInvalid(coding, problem: problem, offset: offset)
        case .compressionRatioExceeded(let limit): .compressionRatioExceeded(limit: limit)
        case .diskFull: .insufficientStorage("the disk filled while writing")
        case .notFound(let id): .uploadNotFound(String(id.prefix(64)))
        case .gone(let upload): .uploadGone(upload)
        case .alreadyComplete(let upload): .alreadyComplete(upload)
        case .offsetMismatch(let expected, let got): .offsetMismatch(expected: expected, got: got)
        case .lengthFixed(let length):
            APIError(.conflict, "length_fixed",
                     "Upload-Length is already \(length) and cannot change; send it only to set a deferred length.")
        case .lengthBelowOffset(let offset): .invalidHeader(.uploadLength, "is below the bytes already received (\(offset))")
        case .conflictingDigest(let earlier):
            .badRequest("conflicting_digest",
                        "Repr-Digest names a different SHA-256 than the one declared earlier (\(earlier)).")
        case .insufficientSpace: .notEnoughSpace()
        case .unfinishedUploadsPerUserQuota(let limit):
            APIError(.tooManyRequests, "unfinished_uploads_per_user_quota",
                     "You have \(limit) unfinished uploads, the most one user may have at once (limit: unfinished "
                     + "uploads per user). Finish or delete (DELETE) some of them, then retry.")
        case .unfinishedUploadsPerCaseQuota(let number, let limit):
            APIError(.tooManyRequests, "unfinished_uploads_per_case_quota",
                     "Case \(number) has \(limit) unfinished uploads, the most a case may have at once (limit: "
                     + "unfinished uploads per case). Finish or delete some of them, then retry.")
        case .caseStorageQuota(let number, let limit):
            APIError(.contentTooLarge, "case_storage_quota",
                     "Case \(number) may hold at most \(limit) bytes of attachments and declared uploads (limit: bytes "
                     + "per case); these bytes would pass it and were not kept. Delete unfinished uploads you no "
                     + "longer need, or open a new case for more data.")
        }
    }

    static func translate(_ error: HTTPError) -> APIError {
        switch error.status {
        case .notFound:
            APIError(.notFound, "not_found", "No such endpoint. The API lives under /api/v1.")
        case .contentTooLarge:
            APIError(.contentTooLarge, "body_too_large", "The request body is too large for this endpoint.")
        case .badRequest:
            APIError(.badRequest, "bad_request", error.body ?? "The request is malformed.")
        default:
            APIError(error.status, "http_\(error.status.code)", error.body ?? error.status.reasonPhrase,
                     headers: error.headers)
        }
    }
}

/// Authentication for everything but `OPTIONS` (tus discovery must work anonymously): a user's bearer token, or a
/// drop credential (issue #20) as a bearer token or as HTTP Basic with the case number as the user name
/// (`curl -u 00001413:TOKEN`, RFC 7617). A drop credential sets `context.dropCredential` and no user.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let database: any MetadataStore
    let now: @Sendable () -> Date

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .options { return try await next(request, context) }
        if request.headers[.authorization] == nil, request.uri.queryParameters["link"] != nil,
           request.method == .get || request.method == .head, request.uri.path.hasSuffix("/content")
        {
            return try await next(request, context)  // a signed download link; the handler verifies it
        }
        guard let header = request.headers[.authorization] else { throw APIError.missingToken() }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { throw APIError.missingToken() }
        var context = context
        switch parts[0].lowercased() {
        case "bearer" where DropToken.isDropToken(String(parts[1])):
            context.dropCredential = try await dropCredential(String(parts[1]), caseNumber: nil)
        case "bearer":
            guard let user = try await database.activeUser(tokenHash: AccessToken.hash(String(parts[1]))) else {
                throw APIError.invalidToken()
            }
            context.user = user
            context.logger[metadataKey: "user"] = "\(user.name)"
            context.observation.user(user)
        case "basic":
            // RFC 7617 §2: base64 of `user-id:password`; the user id is the case number, the password the secret.
            guard let decoded = Data(base64Encoded: String(parts[1])).flatMap({ String(data: $0, encoding: .utf8) }),
                  let colon = decoded.firstIndex(of: ":")
            else { throw APIError.invalidDropCredential() }
            let number = CaseNumber.normalise(String(decoded[..<colon]))
            guard let number else { throw APIError.invalidDropCredential() }
            context.dropCredential = try await dropCredential(String(decoded[decoded.index(after: colon)...]),
                                                              caseNumber: number)
        default:
            throw APIError.missingToken()
        }
        return try await next(request, context)
    }

    /// The usable drop credential with this secret (bound to `caseNumber` when the client named one), its use
    /// recorded at most once a minute. - Throws: 401 `invalid_token` otherwise.
    private func dropCredential(_ secret: String, caseNumber: String?) async throws -> DropToken {
        let at = now()
        guard DropToken.isDropToken(secret), let (token, supportCase) = try await database.dropToken(tokenHash: DropToken.hash(secret)),
              caseNumber == nil || caseNumber == token.caseNumber,
              token.isUsable(at: at, caseIsClosed: supportCase.isClosed)
        else { throw APIError.invalidDropCredential() }
        if token.lastUsedAt.map({ at.timeIntervalSince($0) >= DropToken.lastUsedGranularity }) ?? true {
            try await database.markDropTokenUsed(id: token.id!, at: at)
        }
        return token
    }
}

/// tus core: `Tus-Resumable: 1.0.0` on every request but OPTIONS (else 412) and on every response.
struct TusMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        // Every line must say 1.0.0; a client that repeats the header identically is still speaking it.
        let versions = request.headers[values: .tusResumable]
        if request.method != .options && (versions.isEmpty || versions.contains { $0 != TusProtocol.version }) {
            context.observation.error(APIError.unsupportedVersion().code)
            response = APIError.unsupportedVersion().response(includeBody: request.method != .head)
        } else {
            do {
                response = try await next(request, context)
            } catch {
                let answer = APIError(mapping: error, request: request, logger: context.logger)
                context.observation.error(answer.code)
                response = answer.response(includeBody: request.method != .head)
            }
        }
        response.headers[.tusResumable] = TusProtocol.version
        return response
    }
}

/// Honours `X-HTTP-Method-Override` (tus core) before routing, for clients behind proxies that only
/// pass GET and POST.
struct MethodOverrideResponder<Wrapped: HTTPResponder>: HTTPResponder where Wrapped.Context == AppRequestContext {
    typealias Context = AppRequestContext
    let wrapped: Wrapped

    func respond(to request: Request, context: Context) async throws -> Response {
        guard request.method == .post, let override = request.headers[.methodOverride],
              let method = HTTPRequest.Method(override.uppercased())
        else { return try await wrapped.respond(to: request, context: context) }
        var head = request.head
        head.method = method
        return try await wrapped.respond(to: Request(head: head, body: request.body), context: context)
    }
}

/// Answers a known path asked with a method it does not serve (any method, TRACE included) with 405 and
/// `Allow` (RFC 9110 §15.5.6): Hummingbird's router would answer 404, which tells a client nothing.
/// The table is the router's own list of routes, so it cannot drift from them. A 405 on a tus route
/// carries `Tus-Resumable`, as tus 1.0 asks of every response but OPTIONS: it is made outside the router,
/// where `TusMiddleware` cannot add it.
struct MethodNotAllowedResponder<Wrapped: HTTPResponder>: HTTPResponder where Wrapped.Context == AppRequestContext {
    typealias Context = AppRequestContext
    let wrapped: Wrapped
    let routes: [(path: RouterPath, methods: Set<HTTPRequest.Method>, isTus: Bool)]

    init(wrapped: Wrapped, routes: [Router<AppRequestContext>.RouteDescription],
         tusRoutes: [Router<AppRequestContext>.RouteDescription]) {
        self.wrapped = wrapped
        let tusPaths = Set(tusRoutes.map(\.path.description))
        self.routes = Dictionary(grouping: routes, by: \.path.description).map { path, described in
            var methods = Set(described.map(\.method))
            if methods.contains(.get) { methods.insert(.head) }  // the router answers HEAD for every GET
            return (described[0].path, methods, tusPaths.contains(path))
        }
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        let components = request.uri.path.split(separator: "/")
        let matching = routes.filter { route in
            route.path.components.count == components.count && zip(route.path.components, components).allSatisfy { $0 ~= $1 }
        }
        let allowed = matching.reduce(into: Set<HTTPRequest.Method>()) { $0.formUnion($1.methods) }
        guard allowed.isEmpty || allowed.contains(request.method) else {
            let order: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]
            let allow = order.filter(allowed.contains).map(\.rawValue).joined(separator: ", ")
            var headers: HTTPFields = [.allow: allow]
            if matching.contains(where: \.isTus) { headers[.tusResumable] = TusProtocol.version }
            let answer = APIError(.methodNotAllowed, "method_not_allowed", "This endpoint accepts \(allow) only.",
                                  headers: headers)
            context.observation.error(answer.code)
            return answer.response(includeBody: request.method != .head)
        }
        return try await wrapped.respond(to: request, context: context)
    }
}

/// Outermost: every response says `X-Content-Type-Options: nosniff`, and one that sets no caching rule of
/// its own gets `Cache-Control: no-store`: API responses hold customer data (case subjects, file names,
/// upload state) that no shared or browser cache should keep (RFC 9111 §5.2.2.5). The page and downloads
/// set their own rules.
struct ResponseHeadersResponder<Wrapped: HTTPResponder>: HTTPResponder where Wrapped.Context == AppRequestContext {
    typealias Context = AppRequestContext
    let wrapped: Wrapped

    func respond(to request: Request, context: Context) async throws -> Response {
        var response = try await wrapped.respond(to: request, context: context)
        response.headers[.xContentTypeOptions] = "nosniff"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }
}
