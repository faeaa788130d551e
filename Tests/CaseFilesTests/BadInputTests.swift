@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Issue #2's bad-input list: each gets a precise status and JSON code, and changes nothing.
@Suite struct BadInputTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var method: HTTPRequest.Method
        /// "{upload}" is replaced by a fresh upload's path (length 100, offset 10).
        var path: String
        var headers: [(String, String)]
        var body: [UInt8] = []
        var status: Int
        var code: String
    }

    static let offsetStream = ("Content-Type", "application/offset+octet-stream")
    static func creation(_ extra: [(String, String)]) -> [(String, String)] {
        [("Tus-Resumable", "1.0.0")] + extra
    }
    static func patch(_ extra: [(String, String)]) -> [(String, String)] {
        [("Tus-Resumable", "1.0.0"), offsetStream] + extra
    }
    static let goodMeta = ("Upload-Metadata", metadata())
    static let uploads = "/api/v1/cases/00001413/uploads"

    static let cases: [Case] = [
        Case(description: "unknown case", method: .post, path: "/api/v1/cases/00009999/uploads",
             headers: creation([("Upload-Length", "1"), goodMeta]), status: 404, code: "case_not_found"),
        Case(description: "non-numeric case", method: .post, path: "/api/v1/cases/abc/uploads",
             headers: creation([("Upload-Length", "1"), goodMeta]), status: 404, code: "case_not_found"),
        Case(description: "unknown upload", method: .patch, path: "/api/v1/uploads/0123456789abcdef0123456789abcdef",
             headers: patch([("Upload-Offset", "0")]), status: 404, code: "upload_not_found"),
        Case(description: "upload id with traversal", method: .head, path: "/api/v1/uploads/..%2F..%2Fcasefiles.sqlite",
             headers: creation([]), status: 404, code: ""),
        Case(description: "missing length", method: .post, path: uploads, headers: creation([goodMeta]),
             status: 400, code: "length_required"),
        Case(description: "negative length", method: .post, path: uploads,
             headers: creation([("Upload-Length", "-1"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "non-numeric length", method: .post, path: uploads,
             headers: creation([("Upload-Length", "ten"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "zero-padded length", method: .post, path: uploads,
             headers: creation([("Upload-Length", "010"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "overflowing length", method: .post, path: uploads,
             headers: creation([("Upload-Length", "9223372036854775808"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "duplicated length", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Length", "2"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "length and defer", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Defer-Length", "1"), goodMeta]), status: 400, code: "length_conflict"),
        Case(description: "defer other than 1", method: .post, path: uploads,
             headers: creation([("Upload-Defer-Length", "2"), goodMeta]), status: 400, code: "invalid_header"),
        Case(description: "missing filename", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", "filetype \(base64("text/plain"))")]),
             status: 400, code: "missing_filename"),
        Case(description: "invalid base64", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", "filename %%%")]), status: 400, code: "invalid_metadata"),
        Case(description: "duplicate metadata keys", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", "filename \(base64("a")),filename \(base64("b"))")]),
             status: 400, code: "invalid_metadata"),
        Case(description: "metadata over 4 KiB", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata() + ",pad " + base64(String(repeating: "x", count: 4000)))]),
             status: 400, code: "invalid_metadata"),
        Case(description: "filename with a path", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(filename: "../../etc/passwd"))]),
             status: 400, code: "invalid_filename"),
        Case(description: "filename with NUL", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(filename: "a\u{0}b"))]),
             status: 400, code: "invalid_filename"),
        Case(description: "filename with a newline", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(filename: "a\nb"))]),
             status: 400, code: "invalid_filename"),
        Case(description: "filename with bidi override", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(filename: "invoice\u{202E}fdp.exe"))]),
             status: 400, code: "invalid_filename"),
        Case(description: "filename over 255 bytes", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(filename: String(repeating: "a", count: 256)))]),
             status: 400, code: "invalid_filename"),
        Case(description: "malformed sha256", method: .post, path: uploads,
             headers: creation([("Upload-Length", "1"), ("Upload-Metadata", metadata(sha256: "abc"))]),
             status: 400, code: "invalid_metadata"),
        Case(description: "creation without Tus-Resumable", method: .post, path: uploads,
             headers: [("Upload-Length", "1"), goodMeta], status: 412, code: "unsupported_tus_version"),
        Case(description: "creation with Tus-Resumable 0.2.2", method: .post, path: uploads,
             headers: [("Tus-Resumable", "0.2.2"), ("Upload-Length", "1"), goodMeta], status: 412, code: "unsupported_tus_version"),
        Case(description: "missing offset", method: .patch, path: "{upload}", headers: patch([]),
             status: 400, code: "invalid_header"),
        Case(description: "negative offset", method: .patch, path: "{upload}", headers: patch([("Upload-Offset", "-10")]),
             status: 400, code: "invalid_header"),
        Case(description: "non-numeric offset", method: .patch, path: "{upload}", headers: patch([("Upload-Offset", "ten")]),
             status: 400, code: "invalid_header"),
        Case(description: "zero-padded offset", method: .patch, path: "{upload}", headers: patch([("Upload-Offset", "010")]),
             status: 400, code: "invalid_header"),
        Case(description: "duplicated offset", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "10"), ("Upload-Offset", "10")]), status: 400, code: "invalid_header"),
        Case(description: "overflowing offset", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "99999999999999999999")]), status: 400, code: "invalid_header"),
        Case(description: "wrong offset", method: .patch, path: "{upload}", headers: patch([("Upload-Offset", "0")]),
             body: [1], status: 409, code: "offset_mismatch"),
        Case(description: "changed length", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "10"), ("Upload-Length", "200")]), status: 409, code: "length_fixed"),
        Case(description: "body past the length", method: .patch, path: "{upload}", headers: patch([("Upload-Offset", "10")]),
             body: Array(repeating: 1, count: 91), status: 413, code: "body_exceeds_length"),
        Case(description: "wrong content type", method: .patch, path: "{upload}",
             headers: [("Tus-Resumable", "1.0.0"), ("Content-Type", "text/plain"), ("Upload-Offset", "10")],
             body: [1], status: 415, code: "unsupported_media_type"),
        Case(description: "malformed checksum", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "10"), ("Upload-Checksum", "sha256")]), body: [1], status: 400, code: "invalid_header"),
        Case(description: "unknown checksum algorithm", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "10"), ("Upload-Checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")]), body: [1],
             status: 400, code: "unsupported_checksum_algorithm"),
        Case(description: "malformed Repr-Digest", method: .patch, path: "{upload}",
             headers: patch([("Upload-Offset", "10"), ("Repr-Digest", "sha-256=nope")]), body: [1], status: 400, code: "invalid_header"),
        Case(description: "unknown route", method: .get, path: "/api/v1/nothing-here", headers: [], status: 404, code: "not_found"),
    ]

    @Test(arguments: cases)
    func badInputGetsAPreciseErrorAndChangesNothing(_ input: Case) async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let upload = try await client.createUpload(world, length: 100)
            _ = try await client.patch(upload, token: world.customer, offset: 0, bytes: testBytes(10))
            var headers: HTTPFields = [.authorization: "Bearer \(world.customer)"]
            for (name, value) in input.headers { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
            let path = input.path.replacingOccurrences(of: "{upload}", with: upload)
            let response = try await client.execute(uri: path, method: input.method, headers: headers,
                                                    body: input.body.isEmpty ? nil : ByteBuffer(bytes: input.body))
            #expect(Int(response.status.code) == input.status, "\(input): \(String(buffer: response.body))")
            if input.method != .head {
                #expect(errorCode(response) == input.code, "\(input)")
            }
            #expect(try await client.offset(upload, token: world.customer) == 10, "\(input) changed the upload")
        }
        let uploads = try await world.services.database.uploads(caseNumber: world.caseNumber)
        #expect(uploads.count == 1, "\(input) created an upload")
        #expect(try await world.services.blobs.storedIDs().count == 1)
    }

    @Test func patchAfterCompletionIsRefused() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: 2)
            #expect(try await client.patch(path, token: world.customer, offset: 0, bytes: [1, 2]).status == .noContent)
            let again = try await client.patch(path, token: world.customer, offset: 2, bytes: [3])
            #expect(again.status == .conflict)
            #expect(errorCode(again) == "upload_complete")
        }
    }

    @Test func caseNumbersAreNormalisedConsistently() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let created = try await client.execute(
                uri: "/api/v1/cases/1413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "1", .uploadMetadata: metadata()]))
            #expect(created.status == .created)
            let shown = try await client.execute(uri: "/api/v1/cases/1413", method: .get,
                                                 headers: [.authorization: "Bearer \(world.customer)"])
            #expect(String(buffer: shown.body).contains("\"number\":\"00001413\""))
        }
    }
}
