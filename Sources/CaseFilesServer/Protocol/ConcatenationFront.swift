import Foundation
import HTTPTypes
import Hummingbird
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine

/// tus `concatenation` (tus.io/protocols/resumable-upload#concatenation), on top of `UploadsController`: a partial
/// upload is an ordinary upload created with `Upload-Concat: partial`; a final upload names complete partials in
/// order, answers `201` at once and is verified in the background (`ConcatenationVerifier`): one read of its
/// partials, in order, against the declared SHA-256, before it becomes an attachment. Until then HEAD omits
/// `Upload-Offset` (tus: "the Server MUST NOT include the Upload-Offset header" while the final is not complete)
/// and says how far verification got in `Upload-Verification`.
struct ConcatenationFront: Sendable {
    let services: AppServices

    /// `Upload-Concat`, if sent once and valid.
    /// - Throws: 400 `invalid_upload_concat`, or a repeated field (`TusHeaders.single`).
    static func concatField(in fields: HTTPFields) throws -> UploadConcatField? {
        guard let value = try TusHeaders.single(.uploadConcat, in: fields) else { return nil }
        return try UploadConcatField.parse(value)
    }

    /// POST with `Upload-Concat: final;...`: checks each partial (visible, the caller's own, of this case, a
    /// complete partial upload no other final uses), then creates the final upload and its manifest in one
    /// transaction and wakes the verifier. The length is the partials' sum; the whole file's SHA-256 may be
    /// declared as metadata `sha256` or `Repr-Digest`, and the final is verified against it.
    func createFinal(_ partialIDs: [String], request: Request, context: AppRequestContext) async throws -> Response {
        let user = try context.requireUser()
        let fields = request.headers
        let bodyLength = try TusHeaders.count(.contentLength, in: fields) ?? 0
        if fields[.uploadLength] != nil || fields[.uploadDeferLength] != nil || bodyLength > 0 {
            throw CaseFilesError.finalWithLength()
        }
        let metadata = try UploadMetadata(parsing: TusHeaders.single(.uploadMetadata, in: fields) ?? "")
        let filename = try metadata.filename()
        let filetype = try metadata.string("filetype")
        let declared = try UploadsController.mergeDeclared(try metadata.sha256(), try TusHeaders.reprDigest(in: fields))

        guard let number = CaseNumber.normalise(context.parameters.get("number") ?? "") else {
            throw APIError.caseNotFound(context.parameters.get("number") ?? "")
        }
        guard let supportCase = try await services.database.supportCase(number: number) else { throw APIError.caseNotFound(number) }
        switch AccessPolicy.decide(user: user, caseAccount: supportCase.account, action: .useOwnUpload) {
        case .allow: break
        case .hidden: throw APIError.caseNotFound(number)
        case .forbidden: throw APIError.forbidden("do this on case \(number)")
        }
        guard !supportCase.isClosed else { throw await services.cases.closedCaseError(supportCase.number) }

        var length: Int64 = 0
        for id in partialIDs {
            let partial = try await partialForFinal(id, user: user, caseNumber: supportCase.number)
            length += partial.offset
            if try await services.database.finalUsing(partialID: id) != nil {
                throw CaseFilesError.partialAlreadyUsed(id)
            }
        }
        if let max = services.limits.maxUploadSize, length > max { throw APIError.uploadTooLarge(max: max) }

        let now = services.now()
        let final = Upload(
            id: SecureRandom.identifier(), caseNumber: supportCase.number, filename: filename, filetype: filetype,
            rawMetadata: metadata.raw, length: length, offset: 0, state: .uploading, declaredSHA256: declared,
            digestState: SHA256Digest().savedState, sha256: nil, createdBy: user.id!, createdAt: now, updatedAt: now,
            concat: .final)
        do {
            try await services.database.createFinalUpload(final, partialIDs: partialIDs)
        } catch let changed as UploadChangedUnderWriter {
            // A partial expired, or was used by another final, between the checks above and the transaction.
            throw CaseFilesError(.conflict, "partial_changed", "Partial upload \(changed.id) changed while the final upload "
                                 + "was created (\(changed.detail)); check it with HEAD and try again.")
        }
        services.concatenation.wake()
        context.observation.upload(final.id)
        context.logger.info("final upload created", metadata: [
            "upload": "\(final.id)", "case": "\(final.caseNumber)", "partials": "\(partialIDs.count)", "bytes": "\(length)"])
        return Response(status: .created, headers: [
            .location: (context.publicOrigin ?? "") + "/api/v1/uploads/\(final.id)",
            .uploadVerification: "verifying; verified-bytes=0",
        ])
    }

    /// The partial named `id`, if the caller may use it in a final for `caseNumber` and it is complete.
    /// Refusals follow `AccessPolicy`: a partial the caller may not see is 404, as any upload would be.
    private func partialForFinal(_ id: String, user: User, caseNumber: String) async throws -> Upload {
        guard let (partial, partialCase) = try await services.database.uploadWithCase(id: id) else { throw APIError.uploadNotFound(id) }
        guard AccessPolicy.decide(user: user, caseAccount: partialCase.account, action: .readCase) == .allow else {
            throw APIError.uploadNotFound(id)
        }
        guard partial.createdBy == user.id else { throw CaseFilesError.partialOfOtherUser(id) }
        guard partial.caseNumber == caseNumber else { throw CaseFilesError.partialOfOtherCase(id, caseNumber: caseNumber) }
        guard partial.concat == .partial else { throw CaseFilesError.notAPartial(id) }
        switch partial.state {
        case .verified: return partial
        case .uploading: throw CaseFilesError.partialIncomplete(id, offset: partial.offset, length: partial.length)
        case .failed, .terminated, .expired, .purged: throw APIError.uploadGone(partial)
        }
    }

    /// HEAD on a final upload: its length and parts always; `Upload-Offset` only once verified.
    func head(_ upload: Upload) async throws -> Response {
        let parts = try await services.database.finalParts(finalID: upload.id)
        var headers: HTTPFields = [.cacheControl: "no-store", .uploadConcat: UploadConcatField.finalValue(parts.map(\.id))]
        if let length = upload.length { headers[.uploadLength] = String(length) }
        if !upload.rawMetadata.isEmpty { headers[.uploadMetadata] = upload.rawMetadata }
        switch upload.state {
        case .verified:
            headers[.uploadOffset] = String(upload.offset)
            headers[.uploadVerification] = "verified"
        case .uploading:
            headers[.uploadVerification] = "verifying; verified-bytes=\(upload.offset)"
        case .failed, .terminated, .expired, .purged:
            throw APIError.uploadGone(upload)
        }
        return Response(status: .ok, headers: headers)
    }

    /// PATCH and DELETE: a final upload is never appended to (tus: 403) nor terminated; a partial upload that is
    /// part of a final changes no more.
    func checkChangeable(_ upload: Upload) async throws {
        switch upload.concat {
        case .final: throw CaseFilesError.finalNotWritable(upload.id)
        case .partial:
            if let finalID = try await services.database.finalUsing(partialID: upload.id) {
                throw CaseFilesError.partialInFinal(upload.id, finalID: finalID)
            }
        case nil: break
        }
    }
}

extension HTTPField.Name {
    static let uploadConcat = Self("Upload-Concat")!
    /// CaseFiles' own: a final upload's verification, `verifying; verified-bytes=N` or `verified`.
    static let uploadVerification = Self("Upload-Verification")!
}
