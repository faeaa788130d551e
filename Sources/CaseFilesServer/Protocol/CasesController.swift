import Foundation
import HTTPTypes
import Hummingbird
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// Cases and their attachments as JSON.
struct CasesController: Sendable {
    let services: AppServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("cases", use: list)
        group.post("cases", use: create)
        group.get("cases/:number", use: show)
        group.patch("cases/:number", use: changeStatus)
        group.post("cases/:number/close", use: close)
        group.post("cases/:number/reopen", use: reopen)
        group.get("cases/:number/history", use: history)
        group.post("cases/:number/hold", use: hold)
        group.delete("cases/:number/hold", use: release)
        group.get("purge-runs", use: purgeRuns)
        group.get("cases/:number/attachments", use: attachments)
    }

    private var database: any MetadataStore { services.database }

    // MARK: - Representations (the attachment shapes are Core's: the client decodes the same types)

    struct CaseJSON: Codable, ResponseEncodable {
        var number, account, subject, requestType, priority, status, subStatus: String
        var openedAt: Date
        var closedAt: Date?
        var legalHold: Bool
        var purgedAt: Date?

        init(_ c: SupportCase) {
            number = c.number; account = c.account; subject = c.subject
            requestType = c.requestType.rawValue; priority = c.priority.rawValue
            status = c.status.rawValue; subStatus = c.subStatus
            openedAt = c.openedAt; closedAt = c.closedAt; legalHold = c.legalHold; purgedAt = c.purgedAt
        }
    }

    struct CaseList: Codable, ResponseEncodable {
        var cases: [CaseJSON]
        /// The `after` cursor of the next page (`PageQuery`); absent on the last page.
        var next: String?
    }

    struct CreateCase: Decodable {
        var account: String
        var subject: String
        var number: String?
        var priority: CasePriority?
        var requestType: RequestType?
    }

    // MARK: - Handlers

    /// One page of the cases the caller can see, in number order (`PageQuery`).
    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> EditedResponse<CaseList> {
        let query = try PageQuery(request) { CaseNumber.normalise($0) == $0 }
        let rows = try await database.cases(visibleTo: try context.requireUser(), after: query.after, limit: query.limit + 1)
        let (page, next) = query.page(rows, cursor: \.number)
        return EditedResponse(headers: query.headers(path: "/api/v1/cases", next: next),
                              response: CaseList(cases: page.map(CaseJSON.init), next: next))
    }

    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        CaseJSON(try await visibleCase(context))
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> EditedResponse<CaseJSON> {
        let user = try context.requireUser()
        guard AccessPolicy.decide(user: user, caseAccount: nil, action: .createCase) == .allow else {
            throw APIError.forbidden("create cases; ask a support engineer to open one")
        }
        let input = try await decodeJSON(
            CreateCase.self, request, context,
            expected: #"{"account": "ACME", "subject": "..."} with optional number, priority (Prod Down|High|Medium|Low) "#
                + "and requestType (Support|Admin|License)")
        let created = try await services.cases.open(
            account: input.account, subject: input.subject, number: input.number, priority: input.priority,
            requestType: input.requestType)
        return EditedResponse(status: .created, headers: [.location: "/api/v1/cases/\(created.number)"], response: CaseJSON(created))
    }

    /// One page of the case's attachments and unfinished uploads, oldest first (`PageQuery`; the cursor is a
    /// `ListingPosition`). A page's rows are split between `attachments` and `uploads` as they come.
    @Sendable func attachments(_ request: Request, context: AppRequestContext) async throws
        -> EditedResponse<AttachmentListRepresentation>
    {
        let number = try await visibleCase(context).number
        let query = try PageQuery(request) { ListingPosition(cursor: $0) != nil }
        let rows = try await database.caseListing(number, after: query.after.flatMap(ListingPosition.init(cursor:)),
                                                  limit: query.limit + 1)
        let (uploads, next) = query.page(rows) { ListingPosition($0).cursor }
        let names = try await database.userNames(ids: Set(uploads.map(\.createdBy)))
        return EditedResponse(
            headers: query.headers(path: "/api/v1/cases/\(number)/attachments", next: next),
            response: AttachmentListRepresentation(
                attachments: uploads.filter { $0.state == .verified || $0.state == .purged }
                    .map { AttachmentRepresentation($0, uploadedBy: Self.uploader($0, names: names)) },
                uploads: uploads.filter { $0.state == .uploading }.map(AttachmentListRepresentation.Unfinished.init),
                next: next))
    }

    /// Who uploaded: the user's name, or the drop credential and who made it (issue #20).
    static func uploader(_ upload: Upload, names: [Int64: String]) -> String? {
        guard let token = upload.createdByDropToken else { return names[upload.createdBy] }
        return "drop credential \(token) (made by \(names[upload.createdBy] ?? "unknown"))"
    }

    // MARK: - Lifecycle (handbook: Closing Cases, Reopening Cases)

    struct StatusChange: Decodable {
        var status: CaseStatus
        var subStatus: String
        var comment: String?
    }

    struct Closing: Decodable {
        var subStatus: String
        var comment: String?
    }

    struct Comment: Decodable {
        var comment: String?
    }

    struct History: ResponseEncodable {
        var events: [CaseEvent]
        /// The `after` cursor of the next page (`PageQuery`); absent on the last page.
        var next: String?
    }

    @Sendable func changeStatus(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        let (supportCase, actor) = try await caseFor(context, action: .changeCaseStatus)
        let input = try await decodeJSON(
            StatusChange.self, request, context, expected: #"{"status": "Awaiting Info", "subStatus": "...", "comment": "..."}"#)
        return CaseJSON(try await services.cases.setStatus(
            supportCase.number, to: input.status, subStatus: input.subStatus, comment: input.comment, by: actor))
    }

    @Sendable func close(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        let (supportCase, actor) = try await caseFor(context, action: .closeOrReopenCase)
        let input = try await decodeJSON(
            Closing.self, request, context, expected: #"{"subStatus": "Resolved", "comment": "..."}"#)
        return CaseJSON(try await services.cases.close(
            supportCase.number, subStatus: input.subStatus, comment: input.comment, by: actor))
    }

    @Sendable func reopen(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        let (supportCase, actor) = try await caseFor(context, action: .closeOrReopenCase)
        let input = request.headers[.contentType] == nil ? Comment() : try await decodeJSON(Comment.self, request, context, expected: #"{"comment": "..."}"#)
        return CaseJSON(try await services.cases.reopen(supportCase.number, comment: input.comment, by: actor))
    }

    /// One page of the case's history, oldest first (`PageQuery`; the cursor is an event id).
    @Sendable func history(_ request: Request, context: AppRequestContext) async throws -> EditedResponse<History> {
        let number = try await visibleCase(context).number
        let query = try PageQuery(request) { Int64($0).map { $0 >= 0 } ?? false }
        let rows = try await database.caseHistory(number, after: query.after.flatMap { Int64($0) }, limit: query.limit + 1)
        let (page, next) = query.page(rows) { String($0.id ?? 0) }
        return EditedResponse(headers: query.headers(path: "/api/v1/cases/\(number)/history", next: next),
                              response: History(events: page, next: next))
    }

    @Sendable func hold(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        try await setHold(true, context)
    }

    @Sendable func release(_ request: Request, context: AppRequestContext) async throws -> CaseJSON {
        try await setHold(false, context)
    }

    private func setHold(_ held: Bool, _ context: AppRequestContext) async throws -> CaseJSON {
        let (supportCase, actor) = try await caseFor(context, action: .holdCase)
        return CaseJSON(try await services.cases.setLegalHold(held, supportCase.number, by: actor))
    }

    struct PurgeRuns: ResponseEncodable {
        var runs: [PurgeRun]
    }

    @Sendable func purgeRuns(_ request: Request, context: AppRequestContext) async throws -> PurgeRuns {
        let user = try context.requireUser()
        guard AccessPolicy.decide(user: user, caseAccount: nil, action: .readPurgeLog) == .allow else {
            throw APIError.forbidden("read the purge audit log; ask an administrator")
        }
        return PurgeRuns(runs: try await database.purgeRuns(limit: 1000))
    }

    /// The case in the path if visible, and the caller as an actor allowed to do `action` on it.
    private func caseFor(_ context: AppRequestContext, action: AccessPolicy.Action) async throws -> (SupportCase, CaseActor) {
        let user = try context.requireUser()
        let supportCase = try await visibleCase(context)
        guard AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: action) == .allow else {
            throw APIError.forbidden("do this on case \(supportCase.number)")
        }
        return (supportCase, CaseActor(user: user))
    }

    /// The one way this API reads a JSON body: the right Content-Type, then a message naming what was expected.
    func decodeJSON<T: Decodable>(
        _ type: T.Type, _ request: Request, _ context: AppRequestContext, expected: String
    ) async throws -> T {
        let mediaType = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces)
        guard mediaType?.lowercased() == "application/json" else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "Send `Content-Type: application/json`.")
        }
        // Decided by the headers, so answered before `100 Continue` (RFC 9110 §10.1.1); sent right before the read.
        if let length = request.headers[.contentLength].flatMap(Int.init), length > context.maxUploadSize {
            throw HTTPError(.contentTooLarge)
        }
        await context.sendContinueIfExpected()
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError.badRequest("invalid_json", "The body must be JSON like \(expected).")
        }
    }

    private func visibleCase(_ context: AppRequestContext) async throws -> SupportCase {
        let user = try context.requireUser()
        let raw = context.parameters.get("number") ?? ""
        guard let number = CaseNumber.normalise(raw),
              let supportCase = try await database.supportCase(number: number),
              AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: .readCase) == .allow
        else { throw APIError.caseNotFound(String(raw.prefix(16))) }
        return supportCase
    }
}

extension AttachmentRepresentation: ResponseEncodable {}
extension AttachmentListRepresentation: ResponseEncodable {}
