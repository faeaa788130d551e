@testable import CaseFilesCore
@testable import CaseFilesEngine
@testable import CaseFilesServer
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// The rules an append must pass before its body is read, in the engine, without a front-end.
@Suite struct UploadAdmissionTests {
    @Test func offsetLengthAndDigestAreCheckedOnceAndARefusalChangesNothing() async throws {
        let world = try await TestWorld()
        let path = try await world.withServer { client in
            let created = try await client.execute(
                uri: "/api/v1/cases/\(world.caseNumber)/uploads", method: .post,
                headers: .tus(world.customer, [.uploadDeferLength: "1", .uploadMetadata: metadata()]))
            return try #require(created.headers[.location])
        }
        let id = String(path.split(separator: "/").last!)
        let services = world.services
        func admit(_ offset: Int64, length: Int64? = nil, sha256: String? = nil, body: Int64? = nil) async throws -> Upload {
            try await UploadAdmission.admit(AppendRequest(offset: offset, newLength: length, declaredSHA256: sha256,
                                                          contentLength: body), uploadID: id, services: services)
        }
        await #expect(throws: UploadError.offsetMismatch(expected: 0, got: 5)) { _ = try await admit(5) }
        // A body past the length being set is refused before the length is recorded.
        await #expect(throws: UploadError.bodyExceedsLength(length: 10)) { _ = try await admit(0, length: 10, body: 11) }
        #expect(try await services.database.upload(id: id)?.length == nil)
        #expect(try await admit(0, length: 10).length == 10)
        await #expect(throws: UploadError.lengthFixed(10)) { _ = try await admit(0, length: 12) }
        let sha = String(repeating: "a", count: 64), other = String(repeating: "b", count: 64)
        #expect(try await admit(0, sha256: sha).declaredSHA256 == sha)
        await #expect(throws: UploadError.conflictingDigest(sha)) { _ = try await admit(0, sha256: other) }
        // Another id of the same shape: its first character changed (to "1" when it already was "0").
        let missing = (id.hasPrefix("0") ? "1" : "0") + id.dropFirst()
        await #expect(throws: UploadError.notFound(missing)) {
            _ = try await UploadAdmission.admit(AppendRequest(offset: 0, newLength: nil, declaredSHA256: nil, contentLength: nil),
                                                uploadID: missing, services: services)
        }
    }

    /// The expiry boundary through the same rule the upload path uses: writable one second before, gone at it.
    @Test func anUploadIsGoneFromTheInstantItExpires() throws {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let upload = Upload(id: "0123456789abcdef0123456789abcdef", caseNumber: "00001413", filename: "a.log",
                            rawMetadata: "", length: 10, offset: 0, state: .uploading, digestState: Data(),
                            createdBy: 1, createdAt: t0, updatedAt: t0)
        try UploadAdmission.checkWritable(upload, now: t0.addingTimeInterval(99), expiry: 100)
        var expired = upload
        expired.state = .expired
        #expect(throws: UploadError.gone(expired)) {
            try UploadAdmission.checkWritable(upload, now: t0.addingTimeInterval(100), expiry: 100)
        }
    }
}
