import Foundation
import HTTPTypes
import Hummingbird
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine

/// A case's drop credentials (issue #20): staff create, list and revoke them (`AccessPolicy.Action.manageDropTokens`);
/// `AuthMiddleware` accepts them, `FilesController` and the tus routes take them as uploaders.
struct DropTokensController: Sendable {
    let services: AppServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.post("cases/:number/drop-tokens", use: create)
        group.get("cases/:number/drop-tokens", use: list)
        group.delete("cases/:number/drop-tokens/:tokenID", use: revoke)
    }

    private var database: any MetadataStore { services.database }

    /// One credential as listed: never the secret.
    struct DropTokenJSON: Codable, ResponseEncodable {
        var id: Int64
        var caseNumber: String
        var createdBy: String
        var createdAt: Date
        var expiresAt: Date
        var lastUsedAt: Date?
        var revokedAt: Date?
        var state: DropToken.State
    }

    /// The answer to a creation: the listing's fields, the secret (shown this once), and where to upload.
    struct CreatedJSON: Codable, ResponseEncodable {
        var id: Int64
        var caseNumber: String
        var createdBy: String
        var createdAt: Date
        var expiresAt: Date
        var state: DropToken.State
        var token: String
        /// The curl front-end's URL for this case, relative to the server (`curl -T FILE -u CASE:TOKEN ORIGIN+path`).
        var uploadPath: String
    }

    struct DropTokenList: Codable, ResponseEncodable {
        var dropTokens: [DropTokenJSON]
    }

    struct Creation: Decodable {
        /// Lifetime in seconds: 60 to `DropToken.maxLifetime`; default `DropToken.defaultLifetime`.
        var expiresInSeconds: Int64?
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> EditedResponse<CreatedJSON> {
        let (supportCase, user) = try await staffCase(context)
        let input = request.headers[.contentType] == nil && (request.headers[.contentLength] ?? "0") == "0"
            ? Creation()
            : try await CasesController(services: services).decodeJSON(
                Creation.self, request, context, expected: #"{"expiresInSeconds": 1209600} (optional; 14 days by default)"#)
        let lifetime = input.expiresInSeconds.map(TimeInterval.init) ?? DropToken.defaultLifetime
        guard (60...DropToken.maxLifetime).contains(lifetime) else {
            throw APIError.badRequest("invalid_expiry", "expiresInSeconds must be between 60 and \(Int64(DropToken.maxLifetime)) (90 days).")
        }
        // A credential for a closed case would be revoked at once: refuse it with the case's own answer.
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }
        let secret = DropToken.generate()
        let now = services.now()
        let token = try await database.createDropToken(DropToken(
            caseNumber: supportCase.number, tokenHash: DropToken.hash(secret), createdBy: user.id!, createdAt: now,
            expiresAt: now.addingTimeInterval(lifetime)))
        context.logger.info("drop credential created", metadata: ["case": "\(supportCase.number)", "dropToken": "\(token.id!)"])
        let path = "/api/v1/cases/\(supportCase.number)/drop-tokens/\(token.id!)"
        return EditedResponse(status: .created, headers: [.location: path], response: CreatedJSON(
            id: token.id!, caseNumber: token.caseNumber, createdBy: user.name, createdAt: token.createdAt,
            expiresAt: token.expiresAt, state: token.state(at: now), token: secret,
            uploadPath: "/api/v1/cases/\(supportCase.number)/files/"))
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> DropTokenList {
        let (supportCase, _) = try await staffCase(context)
        let tokens = try await database.dropTokens(caseNumber: supportCase.number)
        let names = try await database.userNames(ids: Set(tokens.map(\.createdBy)))
        let now = services.now()
        return DropTokenList(dropTokens: tokens.map { Self.json($0, createdBy: names[$0.createdBy] ?? "", now: now) })
    }

    @Sendable func revoke(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (supportCase, _) = try await staffCase(context)
        let raw = context.parameters.get("tokenID") ?? ""
        guard let id = Int64(raw), id > 0,
              let token = try await database.revokeDropToken(id: id, caseNumber: supportCase.number, at: services.now())
        else { throw APIError.dropTokenNotFound(raw, caseNumber: supportCase.number) }
        context.logger.info("drop credential revoked", metadata: ["case": "\(supportCase.number)", "dropToken": "\(token.id!)"])
        return Response(status: .noContent)
    }

    static func json(_ token: DropToken, createdBy: String, now: Date) -> DropTokenJSON {
        DropTokenJSON(id: token.id!, caseNumber: token.caseNumber, createdBy: createdBy, createdAt: token.createdAt,
                      expiresAt: token.expiresAt, lastUsedAt: token.lastUsedAt, revokedAt: token.revokedAt,
                      state: token.state(at: now))
    }

    /// The case in the path, if the caller may manage its drop credentials (engineers and admins).
    private func staffCase(_ context: AppRequestContext) async throws -> (SupportCase, User) {
        let user = try context.requireUser()
        let raw = context.parameters.get("number") ?? ""
        guard let number = CaseNumber.normalise(raw), let supportCase = try await database.supportCase(number: number) else {
            throw APIError.caseNotFound(String(raw.prefix(16)))
        }
        switch AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: .manageDropTokens) {
        case .allow: return (supportCase, user)
        case .hidden: throw APIError.caseNotFound(number)
        case .forbidden: throw APIError.forbidden("manage drop credentials of case \(number); ask your support engineer")
        }
    }
}

