import Foundation

/// The retention period and the reopen window, read by `serve` and `purge` alike from the settings
/// table so the two can never disagree.
public struct RetentionSettings: Sendable, Equatable, Codable {
    public var retentionDays: Int
    public var reopenDays: Int

    public static let defaults = RetentionSettings(retentionDays: 30, reopenDays: 30)
    public static let keys = ["retention-days", "reopen-days"]

    public init(retentionDays: Int, reopenDays: Int) {
        self.retentionDays = retentionDays
        self.reopenDays = reopenDays
    }

    /// The settings the `setting` table's rows give, over the defaults: (key, value) pairs as stored, keys from
    /// `keys`; a value that is not a whole number and an unknown key are ignored. Both metadata stores read it so.
    public init(stored pairs: some Sequence<(key: String, value: String)>) {
        self = .defaults
        for (key, value) in pairs {
            switch key {
            case "retention-days": retentionDays = Int(value) ?? retentionDays
            case "reopen-days": reopenDays = Int(value) ?? reopenDays
            default: continue
            }
        }
    }

    public var retention: TimeInterval { TimeInterval(retentionDays) * 86400 }
    public var reopenWindow: TimeInterval { TimeInterval(reopenDays) * 86400 }
}

/// Who acts on a case: a user of the API, or an operator at the command line (full rights).
public struct CaseActor: Sendable {
    public var name: String
    public var role: Role?
    public var account: String?

    public init(user: User) {
        name = user.name
        role = user.role
        account = user.account
    }

    public init(operator name: String) {
        self.name = "cli:\(name)"
        role = nil
        account = nil
    }

    package var isStaff: Bool { role != .customer }
}

/// The handbook's case rules ("Closing Cases", "Reopening Cases", "Case States and Statuses") as pure
/// functions from a case to its next state; the database applies the result in one transaction.
public enum CaseLifecycle {
    /// Engineers and admins move an open case between Open, Awaiting Info and Solution Proposed.
    public static func setStatus(_ supportCase: SupportCase, to status: CaseStatus, subStatus: String,
                                 by actor: CaseActor, at now: Date, settings: RetentionSettings) throws -> SupportCase {
        guard actor.isStaff else { throw CaseFilesError.forbidden("change a case's status; ask your support engineer") }
        guard !supportCase.isClosed else { throw CaseFilesError.caseClosed(supportCase.number, reopenDays: settings.reopenDays) }
        guard status != .closed else {
            throw CaseFilesError(.invalid, "use_close", "Close a case with POST /api/v1/cases/\(supportCase.number)/close.")
        }
        try validate(status, subStatus)
        var next = supportCase
        next.status = status
        next.subStatus = subStatus
        next.updatedAt = now
        return next
    }

    /// Customers of the case's account may close with Resolved or Cancelled; staff with any Closed sub-status.
    public static func close(_ supportCase: SupportCase, subStatus: String, by actor: CaseActor,
                             at now: Date) throws -> SupportCase {
        try validate(.closed, subStatus)
        if !actor.isStaff && !["Resolved", "Cancelled"].contains(subStatus) {
            throw CaseFilesError.forbidden("close a case as \(subStatus); customers close with Resolved or Cancelled")
        }
        guard !supportCase.isClosed else {
            throw CaseFilesError(.conflict, "case_already_closed", "Case \(supportCase.number) is already closed.")
        }
        var next = supportCase
        next.status = .closed
        next.subStatus = subStatus
        next.closedAt = now
        next.updatedAt = now
        return next
    }

    /// "Cases can only be reopened within 30 days of closure" (the window is `settings.reopenDays`); after that,
    /// or once purged, a new case is needed.
    public static func reopen(_ supportCase: SupportCase, by actor: CaseActor, at now: Date,
                              settings: RetentionSettings) throws -> SupportCase {
        guard supportCase.isClosed, let closedAt = supportCase.closedAt else {
            throw CaseFilesError(.conflict, "case_not_closed", "Case \(supportCase.number) is not closed.")
        }
        if supportCase.purgedAt != nil || now.timeIntervalSince(closedAt) > settings.reopenWindow {
            throw CaseFilesError(.conflict, "reopen_window_passed",
                           "Case \(supportCase.number) was closed on \(day(closedAt)), more than \(settings.reopenDays) "
                           + "days ago\(supportCase.purgedAt != nil ? ", and its data has been purged" : ""). Cases can "
                           + "only be reopened within \(settings.reopenDays) days of closure: open a new case and "
                           + "resubmit the data.")
        }
        var next = supportCase
        next.status = .open
        next.subStatus = actor.isStaff ? "Investigation" : "Customer Responded"
        next.closedAt = nil
        next.updatedAt = now
        return next
    }

    package static func validate(_ status: CaseStatus, _ subStatus: String) throws {
        guard status.subStatuses.contains(subStatus) else {
            throw CaseFilesError(
                .invalid, "invalid_sub_status",
                "\(subStatus.prefix(64)) is not a sub-status of \(status.rawValue); use one of: "
                + status.subStatuses.joined(separator: ", ") + ".")
        }
    }

    package static func day(_ date: Date) -> String {
        ISO8601DateFormatter.string(from: date, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withFullDate])
    }
}
