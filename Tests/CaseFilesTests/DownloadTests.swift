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

/// Downloads: ranges, validators, digests, safe headers and the access log, over loopback.
@Suite struct DownloadTests {
    static let file = testBytes(10_000, seed: 99)

    /// Uploads `bytes` as a verified attachment and returns its id.
    static func attach(_ client: some TestClientProtocol, _ world: TestWorld, _ bytes: [UInt8],
                       filename: String = "server.log", filetype: String? = nil) async throws -> String {
        var meta = metadata(filename: filename)
        if let filetype { meta += ",filetype \(base64(filetype))" }
        let created = try await client.execute(
            uri: "/api/v1/cases/00001413/uploads", method: .post,
            headers: .tus(world.customer, [.uploadLength: String(bytes.count), .uploadMetadata: meta]))
        let path = try #require(created.headers[.location])
        #expect(try await client.patch(path, token: world.customer, offset: 0, bytes: bytes).status == .noContent)
        return String(path.split(separator: "/").last!)
    }

    static func get(_ client: some TestClientProtocol, _ id: String, token: String, method: HTTPRequest.Method = .get,
                    _ extra: [HTTPField.Name: String] = [:]) async throws -> TestResponse {
        var headers: HTTPFields = [.authorization: "Bearer \(token)"]
        for (name, value) in extra { headers[name] = value }
        return try await client.execute(uri: "/api/v1/attachments/\(id)/content", method: method, headers: headers)
    }

    @Test func anUploadedHTMLFileIsServedInertWithEveryHeader() async throws {
        let world = try await TestWorld()
        let html = Array("<html><script>alert(document.cookie)</script></html>".utf8)
        try await world.withServer { client in
            let id = try await Self.attach(client, world, html, filename: "report \u{e9}\".html", filetype: "text/html")
            let response = try await Self.get(client, id, token: world.engineer)
            #expect(response.status == .ok)
            #expect(Array(buffer: response.body) == html)
            let h = response.headers
            #expect(h[.contentType] == "application/octet-stream")
            #expect(h[.contentDisposition] == "attachment; filename=\"report __.html\"; filename*=UTF-8''report%20%C3%A9%22.html")
            #expect(h[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            #expect(h[HTTPField.Name("Content-Security-Policy")!] == "sandbox")
            #expect(h[.eTag] == "\"sha256-\(sha256Hex(html))\"")
            #expect(h[.reprDigest] == "sha-256=:\(Data(SHA256Digest.hash(html)).base64EncodedString()):")
            #expect(h[.acceptRanges] == "bytes")
            #expect(h[.contentLength] == String(html.count))
            #expect(h[.lastModified].flatMap(HTTPDate.parse) != nil)
        }
    }

    @Test(arguments: [
        // (Range header, status, first byte, last byte)
        ("bytes=0-0", 206, 0, 0),
        ("bytes=10-19", 206, 10, 19),
        ("bytes=9990-", 206, 9990, 9999),
        ("bytes=-500", 206, 9500, 9999),
        ("bytes=-20000", 206, 0, 9999),
        ("bytes=9000-20000", 206, 9000, 9999),
        ("bytes=0-9999", 206, 0, 9999),
        ("bytes=5-2", 200, 0, 9999),
        ("bytes=0-1,5-6", 200, 0, 9999),
        ("items=0-1", 200, 0, 9999),
        ("bytes=abc", 200, 0, 9999),
    ])
    func rangesAreServedExactly(range: String, status: Int, first: Int, last: Int) async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            let response = try await Self.get(client, id, token: world.customer, [.range: range])
            #expect(Int(response.status.code) == status)
            #expect(Array(buffer: response.body) == Array(Self.file[first...last]))
            #expect(response.headers[.contentLength] == String(last - first + 1))
            if status == 206 {
                #expect(response.headers[.contentRange] == "bytes \(first)-\(last)/10000")
            } else {
                #expect(response.headers[.contentRange] == nil)
            }
        }
    }

    @Test(arguments: ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
    func unsatisfiableRangesAre416WithTheSize(range: String) async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            let response = try await Self.get(client, id, token: world.customer, [.range: range])
            #expect(response.status == .rangeNotSatisfiable)
            #expect(response.headers[.contentRange] == "bytes */10000")
            #expect(errorCode(response) == "range_not_satisfiable")
        }
    }

    @Test func ifRangeHonoursOnlyACurrentValidator() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            let full = try await Self.get(client, id, token: world.customer)
            let etag = try #require(full.headers[.eTag])
            let lastModified = try #require(full.headers[.lastModified])

            let current = try await Self.get(client, id, token: world.customer, [.range: "bytes=100-", .ifRange: etag])
            #expect(current.status == .partialContent)
            #expect(Array(buffer: current.body) == Array(Self.file[100...]))

            let byDate = try await Self.get(client, id, token: world.customer, [.range: "bytes=100-", .ifRange: lastModified])
            #expect(byDate.status == .partialContent)

            for stale in ["\"sha256-\(sha256Hex([1]))\"", "W/\(etag)", "Mon, 01 Jan 2001 00:00:00 GMT", "garbage"] {
                let response = try await Self.get(client, id, token: world.customer, [.range: "bytes=100-", .ifRange: stale])
                #expect(response.status == .ok, "If-Range \(stale)")
                #expect(Array(buffer: response.body) == Self.file)
            }
        }
    }

    @Test func headOnContentHasTheHeadersAndNoBody() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            let head = try await Self.get(client, id, token: world.customer, method: .head)
            #expect(head.status == .ok)
            #expect(head.body.readableBytes == 0)
            #expect(head.headers[.contentLength] == "10000")
            #expect(head.headers[.eTag] == "\"sha256-\(sha256Hex(Self.file))\"")
            let partial = try await Self.get(client, id, token: world.customer, method: .head, [.range: "bytes=-10"])
            #expect(partial.status == .partialContent)
            #expect(partial.headers[.contentRange] == "bytes 9990-9999/10000")
            #expect(partial.body.readableBytes == 0)
        }
    }

    @Test func onlyVerifiedFilesVisibleToTheCallerAreServed() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            #expect(try await Self.get(client, id, token: world.otherCustomer).status == .notFound)

            let unfinished = try await client.createUpload(world, length: 100)
            let unfinishedID = String(unfinished.split(separator: "/").last!)
            _ = try await client.patch(unfinished, token: world.customer, offset: 0, bytes: testBytes(50))
            let inProgress = try await Self.get(client, unfinishedID, token: world.engineer)
            #expect(inProgress.status == .notFound)
            #expect(errorCode(inProgress) == "attachment_not_found")

            let failing = try await client.createUpload(world, length: 10, sha256: sha256Hex([0]))
            _ = try await client.patch(failing, token: world.customer, offset: 0, bytes: testBytes(10))
            let failed = try await Self.get(client, String(failing.split(separator: "/").last!), token: world.engineer)
            #expect(failed.status == .gone)

            let json = try await client.execute(uri: "/api/v1/attachments/\(id)", method: .get,
                                                headers: [.authorization: "Bearer \(world.customer)"])
            #expect(json.status == .ok)
            #expect(String(buffer: json.body).contains(sha256Hex(Self.file)))
            let traversal = try await Self.get(client, "..%2F..%2Fcasefiles.sqlite", token: world.admin)
            #expect(traversal.status == .notFound)
        }
    }

    @Test func everyDownloadIsInTheAccessLogWhichOnlyAdminsRead() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await Self.attach(client, world, Self.file)
            _ = try await Self.get(client, id, token: world.engineer)
            _ = try await Self.get(client, id, token: world.engineer, [.range: "bytes=-100"])
            _ = try await Self.get(client, id, token: world.customer, method: .head)

            for token in [world.customer, world.engineer] {
                let refused = try await client.execute(uri: "/api/v1/access-log", method: .get,
                                                       headers: [.authorization: "Bearer \(token)"])
                #expect(refused.status == .forbidden)
            }
            let log = try await client.execute(uri: "/api/v1/access-log?case=1413", method: .get,
                                               headers: [.authorization: "Bearer \(world.admin)"])
            #expect(log.status == .ok)
            let json = try JSONSerialization.jsonObject(with: Data(buffer: log.body)) as? [String: Any]
            let downloads = try #require(json?["downloads"] as? [[String: Any]])
            #expect(downloads.count == 2)  // HEAD is not a download
            #expect(downloads.map { $0["user"] as? String } == ["erin", "erin"])
            #expect(downloads.map { $0["bytesSent"] as? Int } == [100, 10_000])
            #expect(downloads.map { $0["status"] as? Int } == [206, 200])
            #expect(downloads.first?["range"] as? String == "bytes=-100")
            #expect(downloads.allSatisfy { $0["attachmentID"] as? String == id && $0["completed"] as? Bool == true })
        }
    }
}

/// The rest of the protocol surface: expiration, discovery, method rules.
@Suite struct ProtocolSurfaceTests {
    @Test func abandonedUploadsExpireByTheClockAndAreReclaimed() async throws {
        let world = try await TestWorld(limits: .init(minFreeBytes: 0, uploadExpiry: 7 * 86400))
        try await world.withServer { client in
            let created = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "100", .uploadMetadata: metadata()]))
            let expires = try #require(created.headers[HTTPField.Name("Upload-Expires")!].flatMap(HTTPDate.parse))
            #expect(abs(expires.timeIntervalSince(world.clock.now) - 7 * 86400) < 2)
            let path = try #require(created.headers[.location])
            let patched = try await client.patch(path, token: world.customer, offset: 0, bytes: testBytes(10))
            #expect(patched.headers[HTTPField.Name("Upload-Expires")!] != nil)
            let active = try await client.createUpload(world, length: 100)

            world.clock.advance(by: 6 * 86400)
            _ = try await client.patch(active, token: world.customer, offset: 0, bytes: testBytes(10))  // progress
            world.clock.advance(by: 1 * 86400 + 1)
            #expect(try await client.execute(uri: path, method: .head, headers: .tus(world.customer)).status == .gone)
            let refused = try await client.patch(path, token: world.customer, offset: 10, bytes: testBytes(10))
            #expect(refused.status == .gone)
            #expect(String(buffer: refused.body).contains("expiry"))
            #expect(try await client.offset(active, token: world.customer) == 10)

            let reclaimed = try await UploadExpiryService(services: world.services, interval: AppConfiguration().expirySweepInterval, logger: .init(label: "test")).sweep()
            #expect(reclaimed == [String(path.split(separator: "/").last!)])
        }
        #expect(try await world.services.blobs.storedIDs().count == 1)
        let states = try await world.services.database.uploads(caseNumber: world.caseNumber).map(\.state)
        #expect(states.sorted { $0.rawValue < $1.rawValue } == [.expired, .uploading])
    }

    @Test func optionsAdvertisesExactlyWhatIsImplemented() async throws {
        let world = try await TestWorld(limits: .init(maxUploadSize: 1000, minFreeBytes: 0))
        try await world.withServer { client in
            let options = try await client.execute(uri: "/api/v1/uploads/x", method: .options)
            #expect(options.status == .noContent)
            #expect(options.headers[HTTPField.Name("Tus-Extension")!]
                    == "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation,casefiles-content-encoding")
            #expect(options.headers[HTTPField.Name("Tus-Checksum-Algorithm")!] == "sha1,sha256")
            #expect(options.headers[HTTPField.Name("Tus-Max-Size")!] == "1000")
            let tooBig = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "1001", .uploadMetadata: metadata()]))
            #expect(tooBig.status == .contentTooLarge)
            #expect(errorCode(tooBig) == "upload_too_large")
        }
    }

    @Test func noMaxSizeIsAdvertisedWithoutALimit() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let options = try await client.execute(uri: "/api/v1/cases/00001413/uploads", method: .options)
            #expect(options.headers[HTTPField.Name("Tus-Max-Size")!] == nil)
        }
    }

    @Test(arguments: [
        ("/api/v1/uploads/0123456789abcdef0123456789abcdef", HTTPRequest.Method.get, "HEAD, PATCH, DELETE, OPTIONS"),
        ("/api/v1/uploads/0123456789abcdef0123456789abcdef", .put, "HEAD, PATCH, DELETE, OPTIONS"),
        ("/api/v1/cases/00001413/uploads", .get, "POST, OPTIONS"),
        ("/api/v1/cases/00001413", .delete, "GET, HEAD, PATCH"),
        ("/api/v1/cases", HTTPRequest.Method("TRACE")!, "GET, HEAD, POST"),
        ("/api/v1/attachments/0123456789abcdef0123456789abcdef/content", .post, "GET, HEAD"),
    ])
    func wrongMethodsAre405WithAllow(path: String, method: HTTPRequest.Method, allow: String) async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let response = try await client.execute(uri: path, method: method, headers: .tus(world.engineer))
            #expect(response.status == .methodNotAllowed)
            #expect(response.headers[.allow] == allow)
            #expect(errorCode(response) == "method_not_allowed")
        }
    }

    @Test func caseCreationNeedsJSON() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let wrongType = try await client.execute(
                uri: "/api/v1/cases", method: .post,
                headers: [.authorization: "Bearer \(world.engineer)", .contentType: "text/plain"],
                body: ByteBuffer(string: "{}"))
            #expect(wrongType.status == .unsupportedMediaType)
            let badJSON = try await client.execute(
                uri: "/api/v1/cases", method: .post,
                headers: [.authorization: "Bearer \(world.engineer)", .contentType: "application/json"],
                body: ByteBuffer(string: "{\"account\": 3"))
            #expect(badJSON.status == .badRequest)
            #expect(errorCode(badJSON) == "invalid_json")
            let taken = try await client.execute(
                uri: "/api/v1/cases", method: .post,
                headers: [.authorization: "Bearer \(world.engineer)", .contentType: "application/json"],
                body: ByteBuffer(string: #"{"account": "ACME", "subject": "dup", "number": "1413"}"#))
            #expect(taken.status == .conflict)
            #expect(errorCode(taken) == "case_exists")
        }
    }
}

/// Signed download links (for browsers, which cannot send a bearer header on a plain link).
@Suite struct DownloadLinkTests {
    @Test func aLinkServesOneDownloadAndItsResumptionsOnly() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let issued = try await client.execute(uri: "/api/v1/attachments/\(id)/link", method: .post,
                                                  headers: [.authorization: "Bearer \(world.engineer)"])
            #expect(issued.status == .ok)
            let json = try JSONSerialization.jsonObject(with: Data(buffer: issued.body)) as? [String: Any]
            let url = try #require(json?["url"] as? String)

            let first = try await client.execute(uri: url, method: .get)  // no Authorization header
            #expect(first.status == .ok)
            #expect(Array(buffer: first.body) == DownloadTests.file)
            let resumed = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=5000-"])
            #expect(resumed.status == .partialContent)
            // 10,000 + 5,000 bytes served of a 20,000-byte budget: another whole file would pass it.
            let again = try await client.execute(uri: url, method: .get)
            #expect(again.status == .gone)
            #expect(errorCode(again) == "link_used_up")

            let forged = url.replacingOccurrences(of: "sig=", with: "sig=0")
            #expect(try await client.execute(uri: forged, method: .get).status == .forbidden)
            let otherAttachment = try await DownloadTests.attach(client, world, testBytes(10))
            let swapped = url.replacingOccurrences(of: id, with: otherAttachment)
            #expect(try await client.execute(uri: swapped, method: .get).status == .forbidden)

            world.clock.advance(by: 301)
            let expired = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=0-1"])
            #expect(expired.status == .forbidden)
            #expect(errorCode(expired) == "invalid_link")

            let log = try await client.execute(uri: "/api/v1/access-log?attachment=\(id)", method: .get,
                                               headers: [.authorization: "Bearer \(world.admin)"])
            #expect(String(buffer: log.body).components(separatedBy: "\"user\":\"erin\"").count - 1 == 2)
        }
    }

    static func issueLink(_ client: some TestClientProtocol, _ world: TestWorld, _ id: String) async throws -> (url: String, expiresAt: String) {
        let issued = try await client.execute(uri: "/api/v1/attachments/\(id)/link", method: .post,
                                              headers: [.authorization: "Bearer \(world.engineer)"])
        #expect(issued.status == .ok)
        let json = try JSONSerialization.jsonObject(with: Data(buffer: issued.body)) as? [String: Any]
        return (try #require(json?["url"] as? String), try #require(json?["expiresAt"] as? String))
    }

    /// The query parameter `name` of a link URL.
    static func parameter(_ url: String, _ name: String) -> String {
        URLComponents(string: url)!.queryItems!.first { $0.name == name }!.value!
    }

    @Test func aURLSignedWithTheKeyCannotOutliveItsStoredExpiry() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let (url, _) = try await Self.issueLink(client, world, id)
            // The attacker's case: the key read from link-signing.key, a ten-year expiry signed for a real nonce.
            let nonce = Self.parameter(url, "link")
            let expires = Int64(world.clock.now.timeIntervalSince1970) + 10 * 365 * 86400
            let sig = HMACSHA256.sign("\(id)|\(nonce)|\(expires)", key: try world.services.linkKeys.keys().current).hexString
            let forged = "/api/v1/attachments/\(id)/content?link=\(nonce)&expires=\(expires)&sig=\(sig)"
            #expect(try await client.execute(uri: forged, method: .head).status == .ok)  // the row is still live

            world.clock.advance(by: 301)
            let refused = try await client.execute(uri: forged, method: .get)
            #expect(refused.status == .forbidden)
            #expect(errorCode(refused) == "invalid_link")
            // A nonce that was never issued gets nothing, whatever it is signed with.
            let unknown = SecureRandom.identifier()
            let unknownSig = HMACSHA256.sign("\(id)|\(unknown)|\(expires)", key: try world.services.linkKeys.keys().current).hexString
            let minted = try await client.execute(
                uri: "/api/v1/attachments/\(id)/content?link=\(unknown)&expires=\(expires)&sig=\(unknownSig)", method: .get)
            #expect(minted.status == .forbidden)
            #expect(errorCode(minted) == "invalid_link")
        }
    }

    @Test func linksLiveNoLongerThanTheConfiguredMaximum() async throws {
        let world = try await TestWorld(security: SecurityPolicy(maxLinkLifetime: 60))
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let (url, expiresAt) = try await Self.issueLink(client, world, id)
            let expiry = try #require(ISO8601DateFormatter().date(from: expiresAt))
            #expect((59...60).contains(expiry.timeIntervalSince(world.clock.now)))  // expiresAt is in whole seconds
            #expect(Int64(Self.parameter(url, "expires")) == Int64(expiry.timeIntervalSince1970))
            world.clock.advance(by: 59)
            #expect(try await client.execute(uri: url, method: .head).status == .ok)
            world.clock.advance(by: 2)
            #expect(try await client.execute(uri: url, method: .head).status == .forbidden)
        }
    }

    @Test func aLinkServesTwiceTheFileAndAnUnparseableRangeCountsAsWhole() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let (url, _) = try await Self.issueLink(client, world, id)
            let first = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=0-"])
            #expect(first.status == .partialContent)
            #expect(Array(buffer: first.body) == DownloadTests.file)
            let second = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=abc"])
            #expect(second.status == .ok)  // ignored (RFC 9110 §14.2), so the whole file: 20,000 of 20,000
            #expect(try await client.execute(uri: url, method: .head).status == .ok)  // HEAD sends no bytes
            let third = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=0-"])
            #expect(third.status == .gone)
            #expect(errorCode(third) == "link_used_up")
            let oneByte = try await client.execute(uri: url, method: .get, headers: [.range: "bytes=0-0"])
            #expect(oneByte.status == .gone)

            // Concurrent whole-file requests on a fresh link: exactly two fit its budget.
            let (fresh, _) = try await Self.issueLink(client, world, id)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<6 { group.addTask { try await client.execute(uri: fresh, method: .get).status } }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .ok }.count == 2)
            #expect(statuses.filter { $0 == .gone }.count == 4)
        }
    }

    @Test func aRotationKeepsLinksSignedWithThePreviousKeyOnly() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let (old, _) = try await Self.issueLink(client, world, id)
            let firstKey = try world.services.linkKeys.keys().current
            let rotated = try world.services.linkKeys.rotate()
            #expect(rotated.previous == firstKey && rotated.current != firstKey)
            #expect(try await client.execute(uri: old, method: .head).status == .ok)
            let (new, _) = try await Self.issueLink(client, world, id)
            #expect(try await client.execute(uri: new, method: .head).status == .ok)

            try world.services.linkKeys.rotate()
            let refused = try await client.execute(uri: old, method: .get)
            #expect(refused.status == .forbidden)  // signed with a key two rotations old
            #expect(errorCode(refused) == "invalid_link")
            #expect(try await client.execute(uri: new, method: .head).status == .ok)
        }
    }

    @Test func aCustomerOfAnotherAccountGetsNoLink() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let id = try await DownloadTests.attach(client, world, DownloadTests.file)
            let refused = try await client.execute(uri: "/api/v1/attachments/\(id)/link", method: .post,
                                                   headers: [.authorization: "Bearer \(world.otherCustomer)"])
            #expect(refused.status == .notFound)
        }
    }
}

/// The pages are served with a strict policy.
@Suite struct WebPageTests {
    @Test func pagesAndAssetsCarryAStrictContentSecurityPolicy() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            for path in ["/", "/cases/00001413", "/static/app.js", "/static/app.css"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .ok, "\(path)")
                let csp = response.headers[HTTPField.Name("Content-Security-Policy")!] ?? ""
                #expect(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "\(path)")
                #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            }
            let page = try await client.execute(uri: "/", method: .get)
            #expect(!String(buffer: page.body).contains("<script>"), "no inline script")
        }
    }
}
