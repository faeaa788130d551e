import Foundation
import HTTPTypes
import Hummingbird
import CaseFilesCore

/// Cross-origin browsers (Fetch standard, "CORS protocol"): which origins `--cors-origin` lets in and what
/// they are told. None by default: a page on another origin cannot call the API at all (same-origin only).
///
/// Credentials: the API's credential is a bearer token the page puts in `Authorization` itself; no cookie or
/// HTTP authentication is involved, so `Access-Control-Allow-Credentials` is not sent (a fetch/XHR with a
/// request header it sets is not a "credentialed" request in Fetch's sense) and `withCredentials` stays off.
/// `Access-Control-Allow-Origin` still names the listed origin, never `*`: the answer is per origin.
public struct CORSPolicy: Sendable, Equatable {
    /// Serialized origins (`https://portal.example`, lowercase, default port dropped), as browsers send `Origin`.
    public let origins: Set<String>

    public init(origins: [String]) {
        self.origins = Set(origins.compactMap(Self.origin(parsing:)))
    }

    public var isEnabled: Bool { !origins.isEmpty }

    /// What a preflight allows: every method a route serves, `X-HTTP-Method-Override`'s targets included.
    static let allowedMethods = "GET, HEAD, POST, PATCH, DELETE, OPTIONS, PUT"
    /// Request headers a page may set (tus 1.0, the IETF resumable-upload draft, RFC 9530 digests, ranges).
    /// `Authorization` must be named: Fetch's `*` never covers it.
    static let allowedHeaders = [
        "Authorization", "Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Metadata", "Upload-Defer-Length",
        "Upload-Concat", "Upload-Checksum", "Upload-Complete", "Upload-Incomplete", "Upload-Draft-Interop-Version",
        "Content-Digest", "Repr-Digest", "Want-Repr-Digest", "Want-Content-Digest", "X-HTTP-Method-Override",
        "X-Request-Id", "Content-Type", "Content-Disposition", "Range", "If-Range",
    ].joined(separator: ", ")
    /// Response headers a page may read beyond the CORS-safelisted ones (without `Location` and `Upload-Offset`
    /// a tus client cannot continue).
    static let exposedHeaders = [
        "Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Metadata", "Upload-Complete",
        "Upload-Limit", "Upload-Concat", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
        "Tus-Checksum-Algorithm", "Repr-Digest", "Content-Digest", "ETag", "Content-Range", "Content-Disposition",
        "Retry-After", "X-Request-Id", "Link",
    ].joined(separator: ", ")
    /// Seconds a browser may cache a preflight: Chromium's own cap (Firefox allows a day).
    static let maxAge = "7200"

    /// The listed origin `request` comes from (its `Origin`), or nil: no `Origin`, `null`, or not listed.
    func allowedOrigin(of request: Request) -> String? {
        guard let origin = request.headers[.origin]?.lowercased(), origins.contains(origin) else { return nil }
        return origin
    }

    /// An origin as `--cors-origin` takes it: `http` or `https`, a host, an optional port, nothing more (no
    /// path, not even `/`); lowercased, with a default port dropped, the way browsers serialize `Origin`
    /// (RFC 6454 §6.2). Nil for anything else (including `*` and `null`).
    public static func origin(parsing text: String) -> String? {
        let lowered = text.lowercased()
        let parts = lowered.components(separatedBy: "://")
        guard parts.count == 2, ["http", "https"].contains(parts[0]), !parts[1].isEmpty,
              !parts[1].contains(where: { "/?#@ *\\".contains($0) })
        else { return nil }
        var authority = parts[1]
        if let colon = authority.lastIndex(of: ":"), !authority[colon...].contains("]") {
            let port = authority[authority.index(after: colon)...]
            guard !port.isEmpty, port.allSatisfy(\.isASCII), let number = Int(port), (1...65535).contains(number),
                  colon != authority.startIndex
            else { return nil }
            if (parts[0], number) == ("http", 80) || (parts[0], number) == ("https", 443) {
                authority = String(authority[..<colon])
            }
        }
        return parts[0] + "://" + authority
    }
}

/// Applies `CORSPolicy` around everything the application answers. A responder rather than Hummingbird's
/// `CORSMiddleware`, which is a router middleware and so never sees the answers made outside the router
/// (`MethodNotAllowedResponder`'s 405, `X-HTTP-Method-Override`), sends `Access-Control-Expose-Headers`
/// only on preflights (a page could not read `Location` or `Upload-Offset` of a real answer), and treats
/// every `OPTIONS` with `Origin` as a preflight, which would replace the tus discovery answer.
/// Inside `ResponseHeadersResponder`, so a preflight gets `nosniff` and `no-store` like every answer.
/// An error that escapes the router (none should: `ErrorMiddleware` maps them) becomes Hummingbird's 500
/// without these headers.
struct CORSResponder<Wrapped: HTTPResponder>: HTTPResponder where Wrapped.Context == AppRequestContext {
    typealias Context = AppRequestContext
    let wrapped: Wrapped
    let policy: CORSPolicy

    func respond(to request: Request, context: Context) async throws -> Response {
        guard policy.isEnabled else { return try await wrapped.respond(to: request, context: context) }
        guard let origin = policy.allowedOrigin(of: request) else {
            // Not listed (or no Origin): answered as without CORS, so the browser refuses to share it. The answer
            // still depends on `Origin`, which caches must know (Fetch §3.2.5, "CORS protocol and HTTP caches").
            var response = try await wrapped.respond(to: request, context: context)
            response.headers[values: .vary].append("Origin")
            return response
        }
        // A preflight (Fetch §3.2.2): OPTIONS with `Access-Control-Request-Method`. Any other OPTIONS is tus
        // discovery and goes to its route.
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            return Response(status: .noContent, headers: [
                .accessControlAllowOrigin: origin,
                .accessControlAllowMethods: CORSPolicy.allowedMethods,
                .accessControlAllowHeaders: CORSPolicy.allowedHeaders,
                .accessControlMaxAge: CORSPolicy.maxAge,
                .vary: "Origin",
            ])
        }
        var response = try await wrapped.respond(to: request, context: context)
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.accessControlExposeHeaders] = CORSPolicy.exposedHeaders
        response.headers[values: .vary].append("Origin")
        return response
    }
}
