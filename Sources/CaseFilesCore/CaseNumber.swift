import Foundation

/// Case numbers: 8 digits, `00001413`.
public enum CaseNumber {
    /// "1413" and "00001413" name the same case; anything not 1–8 digits names none.
    public static func normalise(_ text: String) -> String? {
        guard (1...8).contains(text.utf8.count), text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return String(repeating: "0", count: 8 - text.utf8.count) + text
    }

    public static func format(_ value: Int64) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

extension CaseLifecycle {
    /// A new case, Open / New (handbook "Case States and Statuses"): the account and subject trimmed and bounded,
    /// a given number normalised (none: the store picks the next free one). Errors: `CaseFilesError` `.invalid`
    /// (`invalid_account`, `invalid_subject`, `invalid_case_number`).
    public static func open(
        account: String, subject: String, number: String?, priority: CasePriority?,
        requestType: RequestType?, at date: Date
    ) throws -> SupportCase {
        let account = account.trimmingCharacters(in: .whitespaces)
        let subject = subject.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !account.isEmpty, account.utf8.count <= 128 else {
            throw CaseFilesError(.invalid, "invalid_account", "The account must be 1 to 128 bytes.")
        }
        guard !subject.isEmpty, subject.utf8.count <= 1024 else {
            throw CaseFilesError(.invalid, "invalid_subject", "The subject must be 1 to 1024 bytes.")
        }
        var normalised = ""
        if let number {
            guard let value = CaseNumber.normalise(number), value != "00000000" else {
                throw CaseFilesError(.invalid, "invalid_case_number", "A case number is 1 to 8 digits, like 00001413.")
            }
            normalised = value
        }
        return SupportCase(
            number: normalised, account: account, subject: subject, requestType: requestType ?? .support,
            priority: priority ?? .medium, status: .open, subStatus: "New", openedAt: date, closedAt: nil,
            updatedAt: date)
    }
}
