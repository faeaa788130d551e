import CaseFilesCore
import CaseFilesDatabase
import Foundation

/// Every case transition, for the HTTP API and the CLI alike: the rule from `CaseLifecycle`, applied with its
/// history event in one transaction (`MetadataStore.transitionCase`). Permissions are the caller's to check
/// (`AccessPolicy`); the operator at the CLI is staff.
public struct CaseService: Sendable {
    let database: any MetadataStore
    let now: @Sendable () -> Date
    /// The longest comment a transition takes, in bytes of UTF-8 (`SecurityPolicy.maxCommentBytes`).
    let maxCommentBytes: Int

    public init(database: any MetadataStore, now: @escaping @Sendable () -> Date,
                maxCommentBytes: Int = SecurityPolicy.defaultMaxCommentBytes) {
        self.database = database
        self.now = now
        self.maxCommentBytes = maxCommentBytes
    }

    /// The one check of a transition's comment: at most `maxCommentBytes` bytes of UTF-8.
    /// - Throws: `CaseFilesError.commentTooLong` (400).
    func checkComment(_ comment: String?) throws {
        if let comment, comment.utf8.count > maxCommentBytes { throw CaseFilesError.commentTooLong(limit: maxCommentBytes) }
    }

    /// Opens a case (Open / New; `CaseLifecycle.open` validates). Permission is the caller's to check.
    /// Errors: `CaseFilesError` (`.invalid`; `.conflict` `case_exists` for a taken number).
    public func open(account: String, subject: String, number: String?, priority: CasePriority?,
                     requestType: RequestType?) async throws -> SupportCase {
        let draft = try CaseLifecycle.open(account: account, subject: subject, number: number, priority: priority,
                                           requestType: requestType, at: now())
        do {
            return try await database.createCase(draft, numberGiven: number != nil)
        } catch let taken as CaseNumberTaken {
            throw CaseFilesError(.conflict, "case_exists",
                                 "Case \(taken.number) already exists; choose another number or omit it.")
        }
    }

    /// Open, Awaiting Info or Solution Proposed, with a sub-status of it. Errors: `CaseFilesError` (not found,
    /// forbidden for customers, closed, invalid sub-status).
    public func setStatus(_ number: String, to status: CaseStatus, subStatus: String, comment: String?,
                          by actor: CaseActor) async throws -> SupportCase {
        try checkComment(comment)
        let settings = try await database.retentionSettings()
        let now = now()
        return try await database.transitionCase(number, kind: .status, actor: actor.name, comment: comment, at: now) {
            try CaseLifecycle.setStatus($0, to: status, subStatus: subStatus, by: actor, at: now, settings: settings)
        }
    }

    public func close(_ number: String, subStatus: String, comment: String?, by actor: CaseActor) async throws -> SupportCase {
        try checkComment(comment)
        let now = now()
        return try await database.transitionCase(number, kind: .closed, actor: actor.name, comment: comment, at: now) {
            try CaseLifecycle.close($0, subStatus: subStatus, by: actor, at: now)
        }
    }

    /// Within the reopen window (`RetentionSettings.reopenDays`) and before the purge.
    public func reopen(_ number: String, comment: String?, by actor: CaseActor) async throws -> SupportCase {
        try checkComment(comment)
        let settings = try await database.retentionSettings()
        let now = now()
        return try await database.transitionCase(number, kind: .reopened, actor: actor.name, comment: comment, at: now) {
            try CaseLifecycle.reopen($0, by: actor, at: now, settings: settings)
        }
    }

    /// Legal hold on or off: a held case is never purged.
    public func setLegalHold(_ held: Bool, _ number: String, by actor: CaseActor) async throws -> SupportCase {
        try await database.transitionCase(number, kind: held ? .hold : .release, actor: actor.name, comment: nil,
                                          at: now()) {
            var next = $0
            next.legalHold = held
            return next
        }
    }

    /// The refusal for an upload to a closed case, with the reopen window from the settings.
    public func closedCaseError(_ number: String) async -> CaseFilesError {
        // In a task of its own: a writer stopped part-way (its task cancelled) still reads the real window.
        let database = self.database
        let days = (try? await Task { try await database.retentionSettings() }.value.reopenDays)
            ?? RetentionSettings.defaults.reopenDays
        return .caseClosed(number, reopenDays: days)
    }
}
