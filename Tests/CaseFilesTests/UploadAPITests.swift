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

/// The tus endpoints over loopback against the real server, SQLite file and blob directory.
@Suite struct UploadAPITests {
    @Test func chunkedUploadWithChecksumsBecomesAVerifiedAttachment() async throws {
        let world = try await TestWorld()
        let file = testBytes(3_000_000)
        let sha = sha256Hex(file)
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: file.count, sha256: sha)
            var offset = 0
            for size in [1_000_000, 1_500_000, 500_000] {
                let chunk = file[offset..<offset + size]
                let response = try await client.patch(path, token: world.customer, offset: offset, bytes: chunk,
                                                      checksum: checksumHeader(chunk))
                #expect(response.status == .noContent)
                offset += size
                #expect(response.headers[.uploadOffset] == String(offset))
                #expect(response.headers[.tusResumable] == "1.0.0")
            }
            // A client killed before the last 204 still learns that the upload finished.
            let head = try await client.execute(uri: path, method: .head, headers: .tus(world.customer))
            #expect(head.status == .ok)
            #expect(head.headers[.uploadOffset] == String(file.count))
            #expect(head.headers[.uploadLength] == String(file.count))
            #expect(head.headers[.cacheControl] == "no-store")

            let list = try await client.execute(uri: "/api/v1/cases/1413/attachments", method: .get,
                                                headers: [.authorization: "Bearer \(world.engineer)"])
            let json = try JSONSerialization.jsonObject(with: Data(buffer: list.body)) as? [String: Any]
            let attachments = try #require(json?["attachments"] as? [[String: Any]])
            #expect(attachments.count == 1)
            #expect(attachments.first?["sha256"] as? String == sha)
            #expect(attachments.first?["size"] as? Int == file.count)
            #expect(attachments.first?["state"] as? String == "verified")
            #expect(attachments.first?["uploadedBy"] as? String == "carol")
            #expect((json?["uploads"] as? [Any])?.isEmpty == true)
        }
        // The bytes on disk are the file.
        let id = try #require(try await world.services.database.uploads(caseNumber: world.caseNumber).first?.id)
        let blob = try await world.services.blobs.openForReading(id: id).read(at: 0, count: file.count + 1, allocator: .init())
        #expect(Array(buffer: blob) == file)
    }

    @Test func checksumMismatchAnswers460AndKeepsTheOffset() async throws {
        let world = try await TestWorld()
        let file = testBytes(200_000)
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: file.count)
            _ = try await client.patch(path, token: world.customer, offset: 0, bytes: file[..<100_000],
                                       checksum: checksumHeader(file[..<100_000]))
            let bad = try await client.patch(path, token: world.customer, offset: 100_000, bytes: file[100_000...],
                                             checksum: checksumHeader(file[..<10]))
            #expect(bad.status.code == 460)
            #expect(errorCode(bad) == "checksum_mismatch")
            #expect(try await client.offset(path, token: world.customer) == 100_000)

            let sha1 = "sha1 " + {
                var digest = ChunkDigest(.sha1)
                Array(file[100_000...]).withUnsafeBytes { digest.update($0) }
                return Data(digest.finalize()).base64EncodedString()
            }()
            let good = try await client.patch(path, token: world.customer, offset: 100_000, bytes: file[100_000...],
                                              checksum: sha1)
            #expect(good.status == .noContent)
        }
        let upload = try #require(try await world.services.database.uploads(caseNumber: world.caseNumber).first)
        #expect(upload.state == .verified)
        #expect(upload.sha256 == sha256Hex(file))
    }

    @Test func wholeFileMismatchIsNeverAnAttachment() async throws {
        let world = try await TestWorld()
        let file = testBytes(50_000)
        let wrong = sha256Hex(testBytes(10))
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: file.count, sha256: wrong)
            let response = try await client.patch(path, token: world.customer, offset: 0, bytes: file)
            #expect(response.status.code == 422)
            #expect(errorCode(response) == "whole_file_digest_mismatch")
            let message = String(buffer: response.body)
            #expect(message.contains(wrong) && message.contains(sha256Hex(file)))

            let head = try await client.execute(uri: path, method: .head, headers: .tus(world.customer))
            #expect(head.status == .gone)
            let again = try await client.patch(path, token: world.customer, offset: 0, bytes: file)
            #expect(again.status == .gone)
            let list = try await client.execute(uri: "/api/v1/cases/00001413/attachments", method: .get,
                                                headers: [.authorization: "Bearer \(world.customer)"])
            #expect(String(buffer: list.body).contains("\"attachments\":[]"))
        }
        let upload = try #require(try await world.services.database.uploads(caseNumber: world.caseNumber).first)
        #expect(upload.state == .failed)
        #expect(try await world.services.blobs.storedIDs().isEmpty)
    }

    @Test func reprDigestOnTheLastPatchIsVerified() async throws {
        let world = try await TestWorld()
        let file = testBytes(10_000)
        let reprDigest = "sha-256=:\(Data(SHA256Digest.hash(file)).base64EncodedString()):"
        let otherDigest = "sha-256=:\(Data(SHA256Digest.hash([1])).base64EncodedString()):"
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: file.count)
            #expect(try await client.patch(path, token: world.customer, offset: 0, bytes: file[..<4000],
                                           extra: [.reprDigest: reprDigest]).status == .noContent)
            let conflicting = try await client.patch(path, token: world.customer, offset: 4000, bytes: file[4000...],
                                                     extra: [.reprDigest: otherDigest])
            #expect(conflicting.status == .badRequest)
            #expect(errorCode(conflicting) == "conflicting_digest")
            #expect(try await client.patch(path, token: world.customer, offset: 4000, bytes: file[4000...],
                                           extra: [.reprDigest: reprDigest]).status == .noContent)
        }
        let upload = try #require(try await world.services.database.uploads(caseNumber: world.caseNumber).first)
        #expect(upload.state == .verified && upload.declaredSHA256 == sha256Hex(file))
    }

    @Test func deferredLengthIsSetOnceByALaterPatch() async throws {
        let world = try await TestWorld()
        let file = testBytes(30_000)
        try await world.withServer { client in
            let created = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadDeferLength: "1", .uploadMetadata: metadata()]))
            #expect(created.status == .created)
            let path = try #require(created.headers[.location])
            let head = try await client.execute(uri: path, method: .head, headers: .tus(world.customer))
            #expect(head.headers[.uploadDeferLength] == "1")
            #expect(head.headers[.uploadLength] == nil)
            #expect(try await client.patch(path, token: world.customer, offset: 0, bytes: file[..<10_000]).status == .noContent)
            let final = try await client.patch(path, token: world.customer, offset: 10_000, bytes: file[10_000...],
                                               extra: [.uploadLength: String(file.count)])
            #expect(final.status == .noContent)
            let changed = try await client.patch(path, token: world.customer, offset: file.count, bytes: [UInt8](),
                                                 extra: [.uploadLength: "99999"])
            #expect(changed.status == .conflict || changed.status == .badRequest)
        }
        let upload = try #require(try await world.services.database.uploads(caseNumber: world.caseNumber).first)
        #expect(upload.state == .verified && upload.length == 30_000 && upload.sha256 == sha256Hex(file))
    }

    @Test func creationWithUploadAndEmptyFiles() async throws {
        let world = try await TestWorld()
        let file = testBytes(20_000)
        try await world.withServer { client in
            var headers = HTTPFields.tus(world.customer, [.uploadLength: "20000", .uploadMetadata: metadata()])
            headers[.contentType] = "application/offset+octet-stream"
            headers[.uploadChecksum] = checksumHeader(file[..<5000])
            let created = try await client.execute(uri: "/api/v1/cases/00001413/uploads", method: .post,
                                                   headers: headers, body: ByteBuffer(bytes: file[..<5000]))
            #expect(created.status == .created)
            #expect(created.headers[.uploadOffset] == "5000")

            let empty = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "0", .uploadMetadata: metadata(filename: "empty.txt")]))
            #expect(empty.status == .created)
            #expect(empty.headers[.uploadOffset] == "0")
        }
        let uploads = try await world.services.database.uploads(caseNumber: world.caseNumber)
        #expect(uploads.map(\.offset).sorted() == [0, 5000])
        let empty = try #require(uploads.first { $0.filename == "empty.txt" })
        #expect(empty.state == .verified)
        #expect(empty.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func terminationFollowsThePermissionTable() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let mine = try await client.createUpload(world, length: 100)
            #expect(try await client.execute(uri: mine, method: .delete, headers: .tus(world.colleague)).status == .forbidden)
            #expect(try await client.execute(uri: mine, method: .delete, headers: .tus(world.otherCustomer)).status == .notFound)
            #expect(try await client.execute(uri: mine, method: .delete, headers: .tus(world.customer)).status == .noContent)
            #expect(try await client.execute(uri: mine, method: .head, headers: .tus(world.customer)).status == .gone)
            #expect(try await client.patch(mine, token: world.customer, offset: 0, bytes: [1]).status == .gone)

            let other = try await client.createUpload(world, length: 100)
            #expect(try await client.patch(other, token: world.colleague, offset: 0, bytes: [1]).status == .forbidden)
            #expect(try await client.execute(uri: other, method: .delete, headers: .tus(world.engineer)).status == .noContent)
            let another = try await client.createUpload(world, length: 100)
            #expect(try await client.execute(uri: another, method: .delete, headers: .tus(world.admin)).status == .noContent)

            let finished = try await client.createUpload(world, length: 1)
            _ = try await client.patch(finished, token: world.customer, offset: 0, bytes: [7])
            let refused = try await client.execute(uri: finished, method: .delete, headers: .tus(world.customer))
            #expect(refused.status == .forbidden)
            #expect(errorCode(refused) == "attachment_not_deletable")
        }
        #expect(try await world.services.blobs.storedIDs().count == 1)
    }

    /// Issue #2's table, exercised over HTTP for every role.
    @Test func permissionTableOverHTTP() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            // columns: read case, list attachments, create upload, HEAD own upload,
            //          DELETE someone else's unfinished upload, create a case
            let rows: [(String, String, [Int])] = [
                ("customer of the account", world.customer, [200, 200, 201, 200, 403, 403]),
                ("customer of another account", world.otherCustomer, [404, 404, 404, 404, 404, 403]),
                ("engineer", world.engineer, [200, 200, 201, 200, 204, 201]),
                ("admin", world.admin, [200, 200, 201, 200, 204, 201]),
            ]
            for (name, token, expected) in rows {
                let auth: HTTPFields = [.authorization: "Bearer \(token)"]
                let othersUpload = try await client.createUpload(world, token: world.colleague, length: 10)
                var actual: [Int] = []
                actual.append(Int(try await client.execute(uri: "/api/v1/cases/00001413", method: .get, headers: auth).status.code))
                actual.append(Int(try await client.execute(uri: "/api/v1/cases/00001413/attachments", method: .get, headers: auth).status.code))
                let created = try await client.execute(
                    uri: "/api/v1/cases/00001413/uploads", method: .post,
                    headers: .tus(token, [.uploadLength: "10", .uploadMetadata: metadata()]))
                actual.append(Int(created.status.code))
                let own = created.headers[.location] ?? othersUpload
                actual.append(Int(try await client.execute(uri: own, method: .head, headers: .tus(token)).status.code))
                actual.append(Int(try await client.execute(uri: othersUpload, method: .delete, headers: .tus(token)).status.code))
                var json = auth
                json[.contentType] = "application/json"
                let newCase = try await client.execute(
                    uri: "/api/v1/cases", method: .post, headers: json,
                    body: ByteBuffer(string: #"{"account": "ACME", "subject": "License renewal", "requestType": "License"}"#))
                actual.append(Int(newCase.status.code))
                #expect(actual == expected, "row: \(name)")
            }
        }
    }

    @Test func missingAndRevokedTokensAre401() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let none = try await client.execute(uri: "/api/v1/cases", method: .get)
            #expect(none.status == .unauthorized)
            #expect(errorCode(none) == "missing_token")
            #expect(none.headers[.wwwAuthenticate] == "Bearer")
            #expect(try await client.execute(uri: "/api/v1/cases", method: .get,
                                             headers: [.authorization: "Bearer cf_nonsense"]).status == .unauthorized)
            _ = try await world.services.database.revokeUser(named: "carol", at: Date())
            let revoked = try await client.execute(uri: "/api/v1/cases", method: .get,
                                                   headers: [.authorization: "Bearer \(world.customer)"])
            #expect(revoked.status == .unauthorized)
            #expect(errorCode(revoked) == "invalid_token")
            // Public endpoints.
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            let options = try await client.execute(uri: "/api/v1/cases/00001413/uploads", method: .options)
            #expect(options.status == .noContent)
            #expect(options.headers[.tusVersion] == "1.0.0")
        }
    }

    @Test func methodOverrideTurnsAPostIntoAPatch() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: 3)
            var headers = HTTPFields.tus(world.customer, [.uploadOffset: "0"])
            headers[.contentType] = "application/offset+octet-stream"
            headers[HTTPField.Name("X-HTTP-Method-Override")!] = "PATCH"
            let response = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(bytes: [1, 2, 3]))
            #expect(response.status == .noContent)
            #expect(response.headers[.uploadOffset] == "3")
        }
    }

    @Test func caseListsAreScopedToTheAccount() async throws {
        let world = try await TestWorld()
        _ = try await world.services.database.createCase(
            try CaseLifecycle.open(account: "OTHER", subject: "x", number: nil, priority: nil, requestType: nil, at: Date()),
            numberGiven: false)
        try await world.withServer { client in
            let mine = try await client.execute(uri: "/api/v1/cases", method: .get, headers: [.authorization: "Bearer \(world.customer)"])
            #expect(String(buffer: mine.body).contains("00001413"))
            #expect(!String(buffer: mine.body).contains("00001414"))
            let staff = try await client.execute(uri: "/api/v1/cases", method: .get, headers: [.authorization: "Bearer \(world.engineer)"])
            #expect(String(buffer: staff.body).contains("00001414"))
            let shown = try await client.execute(uri: "/api/v1/cases/1413", method: .get, headers: [.authorization: "Bearer \(world.customer)"])
            #expect(String(buffer: shown.body).contains("\"status\":\"Open\""))
            #expect(String(buffer: shown.body).contains("\"subStatus\":\"New\""))
        }
    }

    /// A creation-with-upload that fails, before or after creating its upload, leaves neither row nor blob:
    /// its client never got a Location to resume or terminate.
    @Test func failedCreationWithUploadLeavesNoUploadBehind() async throws {
        let world = try await TestWorld()
        let file = testBytes(10_000)
        try await world.withServer { client in
            func creation(length: String, checksum: String?, body: [UInt8]) async throws -> TestResponse {
                var headers = HTTPFields.tus(world.customer, [.uploadLength: length, .uploadMetadata: metadata()])
                headers[.contentType] = "application/offset+octet-stream"
                if let checksum { headers[.uploadChecksum] = checksum }
                return try await client.execute(uri: "/api/v1/cases/00001413/uploads", method: .post,
                                                headers: headers, body: ByteBuffer(bytes: body))
            }
            let mismatch = try await creation(length: "10000", checksum: checksumHeader([1, 2, 3]), body: file)
            #expect(mismatch.status.code == 460 && errorCode(mismatch) == "checksum_mismatch")
            #expect(mismatch.headers[.location] == nil)
            let tooLong = try await creation(length: "9999", checksum: nil, body: file)
            #expect(tooLong.status == .contentTooLarge && errorCode(tooLong) == "body_exceeds_length")
            let emptyWithBody = try await creation(length: "0", checksum: nil, body: [7])
            #expect(emptyWithBody.status == .contentTooLarge && errorCode(emptyWithBody) == "body_exceeds_length")
        }
        #expect(try await world.services.database.uploads(caseNumber: world.caseNumber).isEmpty)
        #expect(try await world.services.blobs.storedIDs().isEmpty)
    }

    /// A deferred length cannot carry an upload past `--max-upload-size`: the body is refused whole.
    @Test func deferredLengthStopsAtTheMaximumSize() async throws {
        let world = try await TestWorld(limits: .init(maxUploadSize: 10, minFreeBytes: 0))
        try await world.withServer { client in
            let created = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadDeferLength: "1", .uploadMetadata: metadata()]))
            let path = try #require(created.headers[.location])
            #expect(try await client.patch(path, token: world.customer, offset: 0, bytes: testBytes(6)).status == .noContent)
            let over = try await client.patch(path, token: world.customer, offset: 6, bytes: testBytes(5))
            #expect(over.status == .contentTooLarge && errorCode(over) == "upload_too_large")
            #expect(try await client.offset(path, token: world.customer) == 6)
            #expect(try await client.patch(path, token: world.customer, offset: 6, bytes: testBytes(4),
                                           extra: [.uploadLength: "10"]).status == .noContent)
        }
    }
}
