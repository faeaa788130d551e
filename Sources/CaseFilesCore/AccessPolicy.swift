/// Who may do what: the one table the whole service consults (issue #2's permission table).
public enum AccessPolicy {
    public enum Action: CaseIterable, Sendable {
        /// Read a case and list its attachments.
        case readCase
        /// Create an upload, and PATCH, HEAD or DELETE one's own upload.
        case useOwnUpload
        /// DELETE (terminate) an unfinished upload someone else created.
        case modifyOthersUpload
        /// PATCH (send bytes to) an upload someone else created: no one may, so every byte has one author, its
        /// creator (issue #17).
        case appendToOthersUpload
        /// Create a case through the API.
        case createCase
        /// Read the download access log (who downloaded which attachment).
        case readAccessLog
        /// Move a case between Open, Awaiting Info and Solution Proposed.
        case changeCaseStatus
        /// Close or reopen a case (customers within the handbook's limits, checked by CaseLifecycle).
        case closeOrReopenCase
        /// Put a case on legal hold or release it.
        case holdCase
        /// Read the retention purge's audit log.
        case readPurgeLog
        /// Create, list and revoke a case's drop credentials (issue #20): staff only. A drop credential lets
        /// anyone holding it upload into the case, so it is handed out by the support side, never self-served.
        case manageDropTokens
    }

    public enum Decision: Sendable, Equatable {
        case allow
        /// The caller may know the case exists but may not do this: 403.
        case forbidden
        /// A customer of another account must not learn that the case exists: 404.
        case hidden
    }

    /// - Parameter ownAccount: whether the case belongs to the caller's account (ignored for staff).
    public static func decide(role: Role, ownAccount: Bool, action: Action) -> Decision {
        switch (role, action) {
        case (.customer, .appendToOthersUpload) where !ownAccount:
            return .hidden
        case (_, .appendToOthersUpload):
            return .forbidden
        case (.admin, _):
            return .allow
        case (.engineer, .readAccessLog), (.engineer, .holdCase), (.engineer, .readPurgeLog):
            return .forbidden
        case (.engineer, _):
            return .allow
        case (.customer, .createCase), (.customer, .readAccessLog), (.customer, .readPurgeLog):
            return .forbidden
        case (.customer, _) where !ownAccount:
            return .hidden
        case (.customer, .readCase), (.customer, .useOwnUpload), (.customer, .closeOrReopenCase):
            return .allow
        case (.customer, .modifyOthersUpload), (.customer, .changeCaseStatus), (.customer, .holdCase),
             (.customer, .manageDropTokens):
            return .forbidden
        }
    }

    /// A drop credential (issue #20) is bound to one case: there it may create uploads and use the ones it created
    /// (`useOwnUpload`: HEAD, PATCH, PUT, DELETE), and nothing else (403); any other case is hidden from it (404),
    /// as from a customer of another account. Routes that take no case (lists, attachments by id) are refused
    /// as `forbidden`: pass `caseNumber: nil`.
    /// - Parameters: boundCase: the credential's case; caseNumber: the case the request names (eight digits).
    public static func decide(dropCredentialFor boundCase: String, caseNumber: String?, action: Action?) -> Decision {
        if let caseNumber, caseNumber != boundCase { return .hidden }
        return caseNumber != nil && action == .useOwnUpload ? .allow : .forbidden
    }

    public static func decide(user: User, caseAccount: String?, action: Action) -> Decision {
        decide(role: user.role, ownAccount: caseAccount != nil && user.account == caseAccount, action: action)
    }
}
