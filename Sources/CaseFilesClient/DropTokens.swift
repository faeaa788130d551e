import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import CaseFilesCore

/// A case's drop credentials (issue #20), as the API returns them: `POST`, `GET`, `DELETE
/// /api/v1/cases/{n}/drop-tokens[/{id}]`. The caller's token must be an engineer's or an admin's.
extension CaseFilesClient {
    public struct DropTokenInfo: Codable, Sendable {
        public var id: Int64
        public var caseNumber: String
        public var createdBy: String
        public var createdAt: Date
        public var expiresAt: Date
        public var lastUsedAt: Date?
        public var revokedAt: Date?
        public var state: String
        /// Only in the answer to a creation: the secret, shown once.
        public var token: String?
        /// Only in the answer to a creation: the curl front-end's path for the case.
        public var uploadPath: String?
    }

    struct DropTokenList: Codable { var dropTokens: [DropTokenInfo] }

    private static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    /// - Parameter expiresIn: seconds; nil for the server's default (14 days).
    /// - Throws: `ClientFailure` `.refused` with the server's message (a customer's token, a closed case...).
    public func createDropToken(caseNumber: String, expiresIn: TimeInterval?) async throws -> DropTokenInfo {
        let body = try JSONSerialization.data(withJSONObject: expiresIn.map { ["expiresInSeconds": Int64($0)] } ?? [:])
        let reply = try await send("creating a drop credential for case \(caseNumber)") {
            var request = request("/api/v1/cases/\(caseNumber)/drop-tokens", method: .POST,
                                  headers: [("Content-Type", "application/json")])
            request.body = .bytes(ByteBuffer(data: body))
            return request
        }
        guard reply.status == 201 else { throw ClientFailure(.refused, "creating a drop credential: \(reply.errorText)") }
        return try Self.decoder.decode(DropTokenInfo.self, from: Data(buffer: reply.body))
    }

    public func dropTokens(caseNumber: String) async throws -> [DropTokenInfo] {
        try await json(DropTokenList.self, "listing drop credentials of case \(caseNumber)",
                       "/api/v1/cases/\(caseNumber)/drop-tokens").dropTokens
    }

    public func revokeDropToken(caseNumber: String, id: Int64) async throws {
        let reply = try await send("revoking drop credential \(id)") {
            request("/api/v1/cases/\(caseNumber)/drop-tokens/\(id)", method: .DELETE)
        }
        guard reply.status == 204 else { throw ClientFailure(.refused, "revoking drop credential \(id): \(reply.errorText)") }
    }
}
