import Foundation

// tus 1.0 `concatenation` extension (tus.io/protocols/resumable-upload#concatenation): partial uploads sent in
// parallel, then a final upload naming them in order. `concatenation-unfinished` is not offered: every partial
// must be complete when the final is created.

/// What an upload is in a concatenation: a part of a later final upload, or the final upload itself, whose
/// content is its partials' bytes in order (a manifest, never a copy). Stored as the raw value (`upload.concat`).
public enum UploadConcat: String, Codable, Sendable {
    case partial
    case final
}

/// The `Upload-Concat` request field (tus concatenation): `partial`, or `final;` followed by the partial uploads'
/// URLs, separated by spaces, in order. URLs may be absolute or paths; only their path counts, and it must name an
/// upload of this service (`/api/v1/uploads/{id}`).
public enum UploadConcatField: Equatable, Sendable {
    case partial
    case final([String])

    public static let uploadsPath = "/api/v1/uploads/"
    /// The most partials one final may name: more than any client needs for parallel streams, and it bounds
    /// the final's creation transaction and its manifest.
    public static let maxPartials = 1_000

    /// - Throws: `CaseFilesError` `invalid_upload_concat` (400) naming what is wrong.
    public static func parse(_ value: String) throws -> UploadConcatField {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if trimmed == "partial" { return .partial }
        guard trimmed.hasPrefix("final;") else {
            throw CaseFilesError.invalidUploadConcat("it must be `partial` or `final;URL URL ...`")
        }
        let urls = trimmed.dropFirst("final;".count).split(separator: " ", omittingEmptySubsequences: true)
        guard !urls.isEmpty else { throw CaseFilesError.invalidUploadConcat("a final upload names at least one partial upload") }
        guard urls.count <= maxPartials else {
            throw CaseFilesError.invalidUploadConcat("a final upload names at most \(maxPartials) partial uploads")
        }
        var ids: [String] = []
        for url in urls {
            var path = Substring(url)
            if let scheme = path.range(of: "://") {  // absolute: keep the path after the authority
                let afterScheme = path[scheme.upperBound...]
                path = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? ""
            }
            guard path.hasPrefix(uploadsPath) else {
                throw CaseFilesError.invalidUploadConcat("\(url.prefix(200)) is not an upload URL (\(uploadsPath)ID)")
            }
            let id = String(path.dropFirst(uploadsPath.count))
            guard SecureRandom.isIdentifier(id) else {
                throw CaseFilesError.invalidUploadConcat("\(url.prefix(200)) does not name an upload id")
            }
            guard !ids.contains(id) else {
                throw CaseFilesError.invalidUploadConcat("upload \(id) is named twice; each partial upload is used once")
            }
            ids.append(id)
        }
        return .final(ids)
    }

    /// The field's value for a final upload of these partial ids (paths, as `Location` gives them).
    public static func finalValue(_ partialIDs: [String]) -> String {
        "final;" + partialIDs.map { uploadsPath + $0 }.joined(separator: " ")
    }
}

// MARK: - Refusals

extension CaseFilesError {
    public static func invalidUploadConcat(_ problem: String) -> CaseFilesError {
        CaseFilesError(.invalid, "invalid_upload_concat", "Upload-Concat is invalid: \(problem).")
    }

    /// tus concatenation: the final upload's length is the sum of its partials'.
    public static func finalWithLength() -> CaseFilesError {
        CaseFilesError(.invalid, "final_upload_length",
                       "A final upload (Upload-Concat: final) takes its length from its partial uploads: send no "
                       + "Upload-Length, Upload-Defer-Length or body.")
    }

    public static func partialIncomplete(_ id: String, offset: Int64, length: Int64?) -> CaseFilesError {
        CaseFilesError(.invalid, "partial_incomplete",
                       "Partial upload \(id) has \(offset) of \(length.map(String.init) ?? "an undeclared number of") bytes: "
                       + "finish every partial upload before creating the final upload (concatenation-unfinished is not supported).")
    }

    public static func notAPartial(_ id: String) -> CaseFilesError {
        CaseFilesError(.invalid, "not_a_partial_upload",
                       "Upload \(id) was not created with Upload-Concat: partial, so it cannot be part of a final upload.")
    }

    public static func partialOfOtherUser(_ id: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "partial_not_yours",
                       "Partial upload \(id) was created by another user; a final upload is made of your own partial uploads.")
    }

    public static func partialOfOtherCase(_ id: String, caseNumber: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "partial_of_other_case",
                       "Partial upload \(id) belongs to another case; a final upload for case \(caseNumber) is made of "
                       + "partial uploads of that case.")
    }

    public static func partialAlreadyUsed(_ id: String) -> CaseFilesError {
        CaseFilesError(.conflict, "partial_already_used",
                       "Partial upload \(id) is already part of a final upload; each partial upload is used once.")
    }

    /// A partial upload in a final changes no more: its bytes are the final's.
    public static func partialInFinal(_ id: String, finalID: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "partial_in_final",
                       "Partial upload \(id) is part of final upload \(finalID), so it can no longer be appended to or deleted.")
    }

    /// tus concatenation: "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final upload URL".
    public static func finalNotWritable(_ id: String) -> CaseFilesError {
        CaseFilesError(.forbidden, "final_upload_not_writable",
                       "Upload \(id) is a final upload: its bytes are its partial uploads'. Append to the partial uploads; "
                       + "a final upload cannot be appended to or deleted (once verified, it is an attachment).")
    }
}
