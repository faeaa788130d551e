/// A refusal by the domain's rules: a kind, a stable machine-readable code and a message that says what went
/// wrong and what to do. No HTTP here: the server maps each `Kind` to a status in one place
/// (`APIError.init(_:)`), the CLI prints the message.
public struct CaseFilesError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The request names something malformed or impossible (HTTP 400).
        case invalid
        /// The caller may not do this (403).
        case forbidden
        /// Nothing by that name is visible to the caller (404).
        case notFound
        /// The target's current state refuses it (409).
        case conflict
        /// It existed and is gone for good (410).
        case gone
        /// The storage cannot take it (507).
        case insufficientStorage
        /// The service cannot take it right now (it is shutting down) and the same request will succeed
        /// shortly (503, with `Retry-After`).
        case unavailable
    }

    public var kind: Kind
    public var code: String
    public var message: String

    public init(_ kind: Kind, _ code: String, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

// MARK: - The domain's errors (the HTTP-only ones are in the server's APIError table)

extension CaseFilesError {
    public static func forbidden(_ what: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "forbidden", "You may not \(what).")
    }

    public static func caseNotFound(_ number: String) -> CaseFilesError {
        CaseFilesError(.notFound, "case_not_found",
                       "No case \(number) is visible to you. Check the case number (8 digits, like 00001413).")
    }

    /// A closed case takes no uploads and no status changes. 403, not 409, everywhere: tus clients retry a
    /// 409 as an offset conflict, and nothing a client can resend will change a closed case.
    public static func caseClosed(_ number: String, reopenDays: Int) -> CaseFilesError {
        CaseFilesError(.forbidden, "case_closed",
                       "Case \(number) is closed, so it takes no uploads or status changes. Reopen it (within "
                       + "\(reopenDays) days of closure) to go on, or open a new case.")
    }
}
