import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import CaseFilesCore

/// The HTTP side of the command-line client: authenticated requests to a CaseFiles server, retrying
/// network errors, timeouts and 5xx answers with backoff; other answers go back to the caller.
public final class CaseFilesClient: Sendable {
    public let server: String
    package let token: String
    package let retry: RetryPolicy
    package let http: HTTPClient
    package let requestTimeout: TimeAmount
    package let log: @Sendable (String) -> Void

    public init(server: String, token: String, retry: RetryPolicy = .init(), requestTimeout seconds: Int64 = 300,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
        self.retry = retry
        self.requestTimeout = .seconds(seconds)
        self.log = log
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(min(seconds, 60)))
        configuration.decompression = .disabled
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// A reply whose (small) body was read whole: JSON or an error.
    package struct Reply {
        package var status: Int
        package var headers: HTTPHeaders
        package var body: ByteBuffer

        /// `message (code)` from the server's JSON error body, or the status.
        package var errorText: String {
            if let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
               let message = object["message"] as? String
            {
                return "\(message) (\(object["error"] as? String ?? "HTTP \(status)"))"
            }
            return "HTTP \(status)"
        }
    }

    package func request(_ path: String, method: HTTPMethod, headers: [(String, String)] = [], tus: Bool = false) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: path.hasPrefix("http") ? path : server + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if tus { request.headers.add(name: "Tus-Resumable", value: TusProtocol.version) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        return request
    }

    /// Sends until an answer that is not worth retrying arrives; throws `.unreachable` after the last attempt.
    package func send(_ what: String, _ make: () -> HTTPClientRequest) async throws -> Reply {
        var attempt = 0
        while true {
            attempt += 1
            let problem: String
            do {
                let response = try await http.execute(make(), timeout: requestTimeout)
                let body = try await response.body.collect(upTo: 1 << 20)
                let reply = Reply(status: Int(response.status.code), headers: response.headers, body: body)
                guard reply.status >= 500 else { return reply }
                problem = "server answered \(reply.errorText)"
            } catch {
                problem = "\(error)"
            }
            guard attempt < retry.maxAttempts else {
                throw ClientFailure(.unreachable, "\(what) failed after \(attempt) attempts; last: \(problem)")
            }
            let delay = retry.delay(beforeRetry: attempt)
            log("\(what): \(problem); retrying in \(String(format: "%.1f", delay)) s (\(attempt)/\(retry.maxAttempts - 1))")
            try await Task.sleep(for: .seconds(delay))
        }
    }

    /// Decodes a JSON answer, turning any other status into a `.refused` failure with the server's message.
    package func json<T: Decodable>(_ type: T.Type, _ what: String, _ path: String) async throws -> T {
        let reply = try await send(what) { request(path, method: .GET) }
        guard reply.status == 200 else { throw ClientFailure(.refused, "\(what): \(reply.errorText)") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(T.self, from: Data(buffer: reply.body))
    }

    public typealias Attachment = AttachmentRepresentation
    public typealias AttachmentList = AttachmentListRepresentation

    /// The case's whole listing: its pages, fetched in turn by following each page's `next` (`after=NEXT`, the
    /// server's page size), joined in order; the result has no `next`.
    public func attachments(caseNumber: String) async throws -> AttachmentList {
        let path = "/api/v1/cases/\(caseNumber)/attachments"
        var list = try await json(AttachmentList.self, "listing case \(caseNumber)", path)
        while let next = list.next {
            let cursor = next.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? next
            let page = try await json(AttachmentList.self, "listing case \(caseNumber) after \(next)", path + "?after=\(cursor)")
            list.attachments += page.attachments
            list.uploads += page.uploads
            list.next = page.next
        }
        return list
    }

    public func attachment(id: String) async throws -> Attachment {
        try await json(Attachment.self, "reading attachment \(id)", "/api/v1/attachments/\(id)")
    }
}
