import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import CaseFilesCore

/// The package was built without its `static/` resources: the server cannot start without its pages.
struct MissingWebAsset: Error, CustomStringConvertible {
    let name: String
    var description: String { "web asset \(name) is missing from the CaseFiles resource bundle" }
}

/// The "Transfer Files" pages: static HTML, CSS and JavaScript shipped in the repository (no build
/// step, no CDN), read once at startup. The page talks to the same JSON and tus API as every client,
/// which `openapi.json` describes (served anonymously, like the page).
struct WebController: Sendable {
    struct Asset: Sendable {
        let contentType: String
        let bytes: ByteBuffer
    }

    let assets: [String: Asset]

    init() throws {
        func load(_ name: String, _ type: String) throws -> Asset {
            guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "static") else {
                throw MissingWebAsset(name: name)
            }
            return Asset(contentType: type, bytes: ByteBuffer(data: try Data(contentsOf: url)))
        }
        assets = [
            "index.html": try load("index.html", "text/html; charset=utf-8"),
            "app.js": try load("app.js", "text/javascript; charset=utf-8"),
            "bundles.js": try load("bundles.js", "text/javascript; charset=utf-8"),
            "app.css": try load("app.css", "text/css; charset=utf-8"),
            "openapi.json": try load("openapi.json", "application/json"),
        ]
    }

    /// Nothing user-supplied is ever inserted as HTML (the script uses textContent), and this policy
    /// forbids inline script, foreign origins and framing besides.
    static let securityHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        .cacheControl: "no-cache",
    ]

    func addRoutes(to router: Router<AppRequestContext>) {
        router.get("/") { _, _ in serve("index.html") }
        router.get("/cases/:number") { _, _ in serve("index.html") }
        router.get("/static/app.js") { _, _ in serve("app.js") }
        router.get("/static/bundles.js") { _, _ in serve("bundles.js") }
        router.get("/static/app.css") { _, _ in serve("app.css") }
        router.get("/api/v1/openapi.json") { _, _ in serve("openapi.json") }
    }

    func serve(_ name: String) -> Response {
        let asset = assets[name]!
        var headers = Self.securityHeaders
        headers[.contentType] = asset.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.bytes))
    }
}
