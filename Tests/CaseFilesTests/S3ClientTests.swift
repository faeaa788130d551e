import AsyncHTTPClient
@testable import CaseFilesCore
@testable import CaseFilesOutbound
import Foundation
import NIOCore
import Testing

/// The object store the S3 tests run against: OpenStack Swift with s3api, started by `Scripts/objectstore start`
/// (Scripts/test does it), which prints these variables. Unset: the tests are skipped.
enum S3TestStore {
    static let variable = "CASEFILES_TEST_S3_ENDPOINT"
    static let skipMessage = "CASEFILES_TEST_S3_ENDPOINT is unset: start the object store with "
        + "`eval \"$(Scripts/objectstore start | sed 's/^/export /')\"` (Scripts/test does it) to run the S3 tests"

    static var configuration: S3Configuration? {
        let environment = ProcessInfo.processInfo.environment
        guard let endpoint = environment[variable].flatMap(URL.init(string:)),
              let region = environment["CASEFILES_TEST_S3_REGION"], let bucket = environment["CASEFILES_TEST_S3_BUCKET"],
              let accessKeyID = environment["CASEFILES_TEST_S3_ACCESS_KEY_ID"],
              let secret = environment["CASEFILES_TEST_S3_SECRET_ACCESS_KEY"] else { return nil }
        return S3Configuration(endpoint: endpoint, region: region, bucket: bucket, accessKeyID: accessKeyID,
                               secretAccessKey: secret)
    }

    static var isConfigured: Bool { configuration != nil }

    /// A client on the test store and a key prefix no other test uses; the HTTP client is shut down after `body`.
    static func with<T: Sendable>(_ change: (inout S3Configuration) -> Void = { _ in },
                                  _ body: (S3Client, String) async throws -> T) async throws -> T {
        var configuration = try #require(configuration)
        change(&configuration)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: S3Client.httpClientConfiguration())
        do {
            let result = try await body(S3Client(configuration: configuration, httpClient: http),
                                        "tests/\(SecureRandom.identifier())/")
            try await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }
}

/// Every byte of `body`, collected (small objects only).
private func collect(_ body: S3ObjectBody) async throws -> [UInt8] {
    var bytes: [UInt8] = []
    for try await buffer in body { bytes += buffer.readableBytesView }
    return bytes
}

/// Expects `operation` to throw an `S3Error` with this status and code.
private func expectS3Error(status: UInt, code: String?, _ operation: () async throws -> Void,
                           sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await operation()
        Issue.record("no error; expected HTTP \(status) \(code ?? "without a code")", sourceLocation: sourceLocation)
    } catch let error as S3Error {
        #expect(error.status == status, sourceLocation: sourceLocation)
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected an S3Error, got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite(.enabled(if: S3TestStore.isConfigured, Comment(rawValue: S3TestStore.skipMessage)))
struct S3ClientTests {
    @Test func putGetHeadDelete() async throws {
        try await S3TestStore.with { s3, prefix in
            let key = prefix + "hello.txt"
            let etag = try await s3.putObject(key: key, body: ByteBuffer(string: "hello, world"))
            // Swift's ETag is the MD5 of the bytes, in quotes, as S3's is for a single PUT.
            #expect(etag == "\"e4d7f1b4ed2e42d15898f4b27b019da4\"")

            let whole = try await s3.getObject(key: key, range: nil)
            #expect(whole.contentLength == 12)
            #expect(try await collect(whole) == Array("hello, world".utf8))

            let part = try await s3.getObject(key: key, range: 7..<12)
            #expect(part.contentLength == 5)
            #expect(try await collect(part) == Array("world".utf8))
            // A range past the end is cut at the end.
            let tail = try await s3.getObject(key: key, range: 10..<1000)
            #expect(try await collect(tail) == Array("ld".utf8))
            await expectS3Error(status: 416, code: "InvalidRange") { _ = try await s3.getObject(key: key, range: 12..<20) }

            let info = try #require(try await s3.headObject(key: key))
            #expect(info.key == key)
            #expect(info.size == 12)
            #expect(info.etag == etag)
            #expect(abs(info.lastModified.timeIntervalSinceNow) < 120)

            try await s3.deleteObject(key: key)
            #expect(try await s3.headObject(key: key) == nil)
            try await s3.deleteObject(key: key)  // gone already: not an error
            await expectS3Error(status: 404, code: "NoSuchKey") { _ = try await s3.getObject(key: key, range: nil) }
        }
    }

    @Test func oddKeysAreSignedAndStoredAsTheyAre() async throws {
        try await S3TestStore.with { s3, prefix in
            let keys = [prefix + "with space/and  two", prefix + "dossier/résumé-日本.txt", prefix + "a~b+c=d&e?f#g",
                        prefix + "100%/x;y,z:@!$'()*"]
            for (index, key) in keys.enumerated() {
                _ = try await s3.putObject(key: key, body: ByteBuffer(string: "object \(index)"))
                #expect(try await collect(s3.getObject(key: key, range: nil)) == Array("object \(index)".utf8))
            }
            #expect(try await s3.listObjects(prefix: prefix).map(\.key) == keys.sorted())
            for key in keys { try await s3.deleteObject(key: key) }
            #expect(try await s3.listObjects(prefix: prefix).isEmpty)
        }
    }

    /// 64 MiB put as 8 parts of 8 MiB made on the fly, read back as a stream and digested buffer by buffer: the
    /// test never holds the object, and the client hands it over in buffers far smaller than it.
    @Test func aLargeObjectStreams() async throws {
        try await S3TestStore.with { s3, prefix in
            let key = prefix + "large"
            let partSize = 8 << 20
            var expected = SHA256Digest()
            let uploadID = try await s3.createMultipartUpload(key: key)
            var parts: [S3CompletedPart] = []
            var middle: [UInt8] = []  // bytes 30 MiB + 7 ..< 31 MiB + 7, for the ranged read
            for number in 1...8 {
                let bytes = testBytes(partSize, seed: UInt64(number))
                expected.update(bytes)
                if number == 4 { middle = Array(bytes[(6 << 20) + 7 ..< (7 << 20) + 7]) }
                parts.append(S3CompletedPart(partNumber: number, etag: try await s3.uploadPart(
                    key: key, uploadID: uploadID, partNumber: number, body: ByteBuffer(bytes: bytes))))
            }
            _ = try await s3.completeMultipartUpload(key: key, uploadID: uploadID, parts: parts)

            let body = try await s3.getObject(key: key, range: nil)
            #expect(body.contentLength == 64 << 20)
            var digest = SHA256Digest()
            var total = 0
            var largest = 0
            var buffers = 0
            for try await buffer in body {
                digest.update(buffer)
                total += buffer.readableBytes
                largest = max(largest, buffer.readableBytes)
                buffers += 1
            }
            #expect(total == 64 << 20)
            #expect(digest.finalize() == expected.finalize())
            #expect(largest <= 4 << 20, "the body came in buffers of up to \(largest) bytes")
            #expect(buffers >= 16)

            let ranged = try await s3.getObject(key: key, range: Int64((30 << 20) + 7) ..< Int64((31 << 20) + 7))
            #expect(ranged.contentLength == 1 << 20)
            #expect(try await collect(ranged) == middle)
            try await s3.deleteObject(key: key)
        }
    }

    @Test func multipartUploadOfThreeParts() async throws {
        try await S3TestStore.with { s3, prefix in
            let key = prefix + "multipart"
            let sizes = [5 << 20, 5 << 20, 1234]
            let uploadID = try await s3.createMultipartUpload(key: key)
            #expect(try await s3.listMultipartUploads(prefix: prefix).map(\.key) == [key])
            #expect(try await s3.listMultipartUploads(prefix: prefix).map(\.uploadID) == [uploadID])

            var whole: [UInt8] = []
            var uploaded: [S3CompletedPart] = []
            // Uploaded out of order: the parts' numbers, not their order, make the object.
            for number in [2, 1, 3] {
                let bytes = testBytes(sizes[number - 1], seed: UInt64(100 + number))
                let etag = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: number,
                                                   body: ByteBuffer(bytes: bytes))
                uploaded.append(S3CompletedPart(partNumber: number, etag: etag, size: Int64(bytes.count)))
            }
            for number in 1...3 { whole += testBytes(sizes[number - 1], seed: UInt64(100 + number)) }

            let listed = try await s3.listParts(key: key, uploadID: uploadID)
            #expect(listed == uploaded.sorted { $0.partNumber < $1.partNumber })
            // Followed over pages of one part each.
            #expect(try await s3.listParts(key: key, uploadID: uploadID, pageSize: 1) == listed)

            let etag = try await s3.completeMultipartUpload(key: key, uploadID: uploadID,
                                                            parts: uploaded.map { S3CompletedPart(partNumber: $0.partNumber, etag: $0.etag) })
            // S3's multipart ETag: "<hex MD5 of the parts' MD5s>-<number of parts>", quoted.
            #expect(etag.hasPrefix("\"") && etag.hasSuffix("-3\""), "\(etag)")
            #expect(try await s3.listMultipartUploads(prefix: prefix).isEmpty)

            let info = try #require(try await s3.headObject(key: key))
            #expect(info.size == Int64(whole.count))
            #expect(info.etag == etag)
            var digest = SHA256Digest()
            for try await buffer in try await s3.getObject(key: key, range: nil) { digest.update(buffer) }
            #expect(digest.finalize().hexString == sha256Hex(whole))
            try await s3.deleteObject(key: key)
        }
    }

    @Test func abortLeavesNoUpload() async throws {
        try await S3TestStore.with { s3, prefix in
            let key = prefix + "aborted"
            let uploadID = try await s3.createMultipartUpload(key: key)
            _ = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: 1, body: ByteBuffer(string: "part"))
            try await s3.abortMultipartUpload(key: key, uploadID: uploadID)
            #expect(try await s3.listMultipartUploads(prefix: prefix).isEmpty)
            try await s3.abortMultipartUpload(key: key, uploadID: uploadID)  // gone already: not an error
            await expectS3Error(status: 404, code: "NoSuchUpload") { _ = try await s3.listParts(key: key, uploadID: uploadID) }
            #expect(try await s3.headObject(key: key) == nil)
        }
    }

    @Test func listingsFollowTheirPages() async throws {
        try await S3TestStore.with { s3, prefix in
            let keys = (0..<7).map { prefix + "object-\($0)" }
            for key in keys { _ = try await s3.putObject(key: key, body: ByteBuffer(string: key)) }
            _ = try await s3.putObject(key: String(prefix.dropLast()) + "-other", body: ByteBuffer(string: "not under the prefix"))

            let listed = try await s3.listObjects(prefix: prefix, pageSize: 3)
            #expect(listed.map(\.key) == keys)
            #expect(listed.map(\.size) == keys.map { Int64($0.utf8.count) })
            #expect(try await s3.listObjects(prefix: prefix) == listed)

            var uploads: [S3MultipartUpload] = []
            for index in 0..<5 {
                let key = prefix + "upload-\(index % 3)"  // two uploads on one key: the upload-id marker counts
                uploads.append(S3MultipartUpload(key: key, uploadID: try await s3.createMultipartUpload(key: key),
                                                 initiated: Date()))
            }
            let listedUploads = try await s3.listMultipartUploads(prefix: prefix, pageSize: 2)
            #expect(Set(listedUploads.map(\.uploadID)) == Set(uploads.map(\.uploadID)))
            #expect(listedUploads.count == 5)
            #expect(listedUploads.allSatisfy { abs($0.initiated.timeIntervalSinceNow) < 120 })
            for upload in uploads { try await s3.abortMultipartUpload(key: upload.key, uploadID: upload.uploadID) }
            for key in keys { try await s3.deleteObject(key: key) }
            try await s3.deleteObject(key: String(prefix.dropLast()) + "-other")
        }
    }

    @Test func aListingLongerThanItsPageBoundThrows() async throws {
        try await S3TestStore.with({ $0.maxListPages = 2 }) { s3, prefix in
            for index in 0..<5 { _ = try await s3.putObject(key: prefix + "\(index)", body: ByteBuffer(string: "x")) }
            #expect(try await s3.listObjects(prefix: prefix, pageSize: 3).count == 5)
            await #expect(throws: S3ResponseError.self) { _ = try await s3.listObjects(prefix: prefix, pageSize: 2) }
            for index in 0..<5 { try await s3.deleteObject(key: prefix + "\(index)") }
        }
    }

    @Test func aWrongSecretIsRefused() async throws {
        try await S3TestStore.with({ $0.secretAccessKey += "-wrong" }) { s3, prefix in
            await expectS3Error(status: 403, code: "SignatureDoesNotMatch") {
                _ = try await s3.putObject(key: prefix + "x", body: ByteBuffer(string: "x"))
            }
            await expectS3Error(status: 403, code: "SignatureDoesNotMatch") { _ = try await s3.listObjects(prefix: prefix) }
            // HEAD answers carry no body, so no code.
            await expectS3Error(status: 403, code: nil) { _ = try await s3.headObject(key: prefix + "x") }
        }
    }

    /// What the store enforces of S3's multipart rules: every part but the last at least 5 MiB (checked at
    /// completion), part numbers 1...10,000.
    @Test func theStoreEnforcesS3sPartRules() async throws {
        try await S3TestStore.with { s3, prefix in
            let key = prefix + "small-parts"
            let uploadID = try await s3.createMultipartUpload(key: key)
            let first = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: 1,
                                                body: ByteBuffer(bytes: testBytes((5 << 20) - 1)))
            let second = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: 2, body: ByteBuffer(string: "end"))
            await expectS3Error(status: 400, code: "EntityTooSmall") {
                _ = try await s3.completeMultipartUpload(key: key, uploadID: uploadID, parts: [
                    S3CompletedPart(partNumber: 1, etag: first), S3CompletedPart(partNumber: 2, etag: second)])
            }
            await expectS3Error(status: 400, code: "InvalidArgument") {
                _ = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: 10_001, body: ByteBuffer(string: "x"))
            }
            // Part 10,000 is allowed (Scripts/objectstore raises Swift's default of 1,000 to S3's 10,000).
            _ = try await s3.uploadPart(key: key, uploadID: uploadID, partNumber: 10_000, body: ByteBuffer(string: "x"))
            try await s3.abortMultipartUpload(key: key, uploadID: uploadID)
        }
    }

    @Test func creatingTheBucketAgainIsFine() async throws {
        try await S3TestStore.with { s3, _ in
            try await s3.createBucket()
            try await s3.createBucket()
        }
    }
}
