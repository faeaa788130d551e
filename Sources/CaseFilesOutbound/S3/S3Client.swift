import AsyncHTTPClient
import CaseFilesCore
import Foundation
import NIOCore
import NIOHTTP1

/// A small S3 client: the object and multipart-upload calls the S3 blob store needs, path-style, signed with
/// SigV4 (`SigV4Signer`), over the caller's AsyncHTTPClient. It never retries: the caller decides what is safe to
/// repeat. Every answer is bounded: XML bodies are read up to a cap before parsing (`Caps`), every request has a
/// deadline (`S3Configuration.requestTimeout`), listings stop after `S3Configuration.maxListPages` pages.
///
/// Errors: `S3Error` for an answer with an error status (its HTTP status and S3's `Code`), `S3ResponseError` for a
/// success answer that cannot be used, AsyncHTTPClient's errors for the connection.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    private let httpClient: HTTPClient
    private let signer: SigV4Signer

    /// Bodies up to this size are signed with their SHA-256; bigger ones are sent `UNSIGNED-PAYLOAD`, so a part is
    /// not hashed a second time on the upload path (the blob store digests every byte already).
    public static let signedPayloadLimit = 1 << 20

    /// The most bytes read of an answer's XML body, by kind.
    enum Caps {
        static let errorBody = 64 << 10
        static let smallAnswer = 1 << 20
        static let listingPage = 8 << 20
    }

    /// An AsyncHTTPClient configuration that suits S3: no redirects (a redirect would carry a signature to another
    /// host), a connect timeout, and a read timeout that bounds a stalled GET body (`getObject`).
    public static func httpClientConfiguration(connectTimeout: TimeAmount = .seconds(10),
                                               readTimeout: TimeAmount = .seconds(60)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: connectTimeout, read: readTimeout)
        return configuration
    }

    public init(configuration: S3Configuration, httpClient: HTTPClient) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.signer = SigV4Signer(accessKeyID: configuration.accessKeyID,
                                  secretAccessKey: configuration.secretAccessKey, region: configuration.region)
    }

    // MARK: Objects

    /// PutObject: stores `body` as the object `key`, replacing any.
    /// - Returns: the object's ETag, quotes included.
    public func putObject(key: String, body: ByteBuffer) async throws -> String {
        let response = try await send(.PUT, key: key, body: body, operation: "PutObject")
        try await expect(response, [200], operation: "PutObject", key: key)
        _ = try await response.body.collect(upTo: Caps.errorBody)
        return try etag(response, operation: "PutObject")
    }

    /// GetObject: the object's bytes, or those of `range` (byte offsets, upper bound exclusive, not empty), streamed.
    /// A range past the end is cut to the object's end by the store (the body's `contentLength` says how much).
    /// - Throws: `S3Error` 404 `NoSuchKey`; 416 `InvalidRange` when the range starts at or past the end.
    public func getObject(key: String, range: Range<Int64>?) async throws -> S3ObjectBody {
        var headers: [(String, String)] = []
        if let range {
            guard !range.isEmpty, range.lowerBound >= 0 else {
                throw S3ResponseError(operation: "GetObject", reason: "empty or negative range \(range)")
            }
            // RFC 9110 §14.1.2: the last position is inclusive.
            headers.append(("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        }
        let response = try await send(.GET, key: key, headers: headers, operation: "GetObject")
        try await expect(response, range == nil ? [200] : [206], operation: "GetObject", key: key)
        let length = response.headers.first(name: "content-length").flatMap { Int64($0) }
        return S3ObjectBody(contentLength: length, body: response.body)
    }

    /// HeadObject: the object's size, ETag and modification time; nil if there is no such object.
    public func headObject(key: String) async throws -> S3ObjectInfo? {
        let response = try await send(.HEAD, key: key, operation: "HeadObject")
        if response.status == .notFound { return nil }
        try await expect(response, [200], operation: "HeadObject", key: key)
        guard let size = response.headers.first(name: "content-length").flatMap({ Int64($0) }),
              let modified = response.headers.first(name: "last-modified").flatMap(Self.parseHTTPDate)
        else {
            throw S3ResponseError(operation: "HeadObject", reason: "Content-Length or Last-Modified missing or malformed")
        }
        return S3ObjectInfo(key: key, size: size, etag: try etag(response, operation: "HeadObject"), lastModified: modified)
    }

    /// DeleteObject; an object that does not exist is not an error (S3 answers 204 either way, some stores 404).
    public func deleteObject(key: String) async throws {
        let response = try await send(.DELETE, key: key, operation: "DeleteObject")
        if response.status == .notFound {
            _ = try await response.body.collect(upTo: Caps.errorBody)
            return
        }
        try await expect(response, [200, 204], operation: "DeleteObject", key: key)
        _ = try await response.body.collect(upTo: Caps.errorBody)
    }

    // MARK: Multipart uploads

    /// CreateMultipartUpload.
    /// - Returns: the UploadId.
    public func createMultipartUpload(key: String) async throws -> String {
        let root = try await exchangeXML(.POST, key: key, query: [("uploads", "")], operation: "CreateMultipartUpload",
                                         cap: Caps.smallAnswer)
        guard root.name == "InitiateMultipartUploadResult", let uploadID = root.text("UploadId"), !uploadID.isEmpty else {
            throw S3ResponseError(operation: "CreateMultipartUpload", reason: "no UploadId in <\(root.name)>")
        }
        return uploadID
    }

    /// UploadPart: `body` as part `partNumber` (1...10,000) of the upload; every part but the last must be at
    /// least 5 MiB (S3's rule; checked by the store at completion, `EntityTooSmall`).
    /// - Returns: the part's ETag, quotes included.
    public func uploadPart(key: String, uploadID: String, partNumber: Int, body: ByteBuffer) async throws -> String {
        let query = [("partNumber", String(partNumber)), ("uploadId", uploadID)]
        let response = try await send(.PUT, key: key, query: query, body: body, operation: "UploadPart")
        try await expect(response, [200], operation: "UploadPart", key: key)
        _ = try await response.body.collect(upTo: Caps.errorBody)
        return try etag(response, operation: "UploadPart")
    }

    /// CompleteMultipartUpload with `parts` (sorted here by number, as S3 requires).
    /// - Returns: the object's ETag, quotes included.
    /// - Throws: `S3Error` also when the store answered 200 with an `<Error>` body, which S3 does for errors
    ///   found after it began answering (S3 API reference, CompleteMultipartUpload).
    public func completeMultipartUpload(key: String, uploadID: String, parts: [S3CompletedPart]) async throws -> String {
        var xml = "<CompleteMultipartUpload>"
        for part in parts.sorted(by: { $0.partNumber < $1.partNumber }) {
            xml += "<Part><PartNumber>\(part.partNumber)</PartNumber><ETag>\(Self.escapeXML(part.etag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let root = try await exchangeXML(.POST, key: key, query: [("uploadId", uploadID)],
                                         headers: [("Content-Type", "application/xml")], body: ByteBuffer(string: xml),
                                         operation: "CompleteMultipartUpload", cap: Caps.smallAnswer)
        if root.name == "Error" {
            throw S3Error(status: 200, code: root.text("Code"), message: root.text("Message"),
                          operation: "CompleteMultipartUpload", key: key)
        }
        guard root.name == "CompleteMultipartUploadResult", let etag = root.text("ETag"), !etag.isEmpty else {
            throw S3ResponseError(operation: "CompleteMultipartUpload", reason: "no ETag in <\(root.name)>")
        }
        return etag
    }

    /// AbortMultipartUpload; an upload that no longer exists (404 `NoSuchUpload`) is not an error.
    public func abortMultipartUpload(key: String, uploadID: String) async throws {
        let response = try await send(.DELETE, key: key, query: [("uploadId", uploadID)], operation: "AbortMultipartUpload")
        if response.status == .notFound {
            let error = await failure(response, operation: "AbortMultipartUpload", key: key)
            if error.code == nil || error.code == "NoSuchUpload" { return }
            throw error
        }
        try await expect(response, [200, 204], operation: "AbortMultipartUpload", key: key)
        _ = try await response.body.collect(upTo: Caps.errorBody)
    }

    /// ListParts: every part uploaded so far, by number, following the pages.
    public func listParts(key: String, uploadID: String) async throws -> [S3CompletedPart] {
        try await listParts(key: key, uploadID: uploadID, pageSize: 1000)
    }

    /// `listParts` with `pageSize` parts a page (1...1000), so the tests can make it follow several pages.
    package func listParts(key: String, uploadID: String, pageSize: Int) async throws -> [S3CompletedPart] {
        var parts: [S3CompletedPart] = []
        var marker: String?
        for _ in 0..<configuration.maxListPages {
            var query = [("uploadId", uploadID), ("max-parts", String(pageSize))]
            if let marker { query.append(("part-number-marker", marker)) }
            let root = try await exchangeXML(.GET, key: key, query: query, operation: "ListParts", cap: Caps.listingPage)
            guard root.name == "ListPartsResult" else {
                throw S3ResponseError(operation: "ListParts", reason: "root <\(root.name)>")
            }
            for part in root.children("Part") {
                guard let number = part.text("PartNumber").flatMap({ Int($0) }), let etag = part.text("ETag"),
                      let size = part.text("Size").flatMap({ Int64($0) }) else {
                    throw S3ResponseError(operation: "ListParts", reason: "a <Part> without PartNumber, ETag or Size")
                }
                parts.append(S3CompletedPart(partNumber: number, etag: etag, size: size))
            }
            guard root.text("IsTruncated") == "true" else { return parts }
            guard let next = root.text("NextPartNumberMarker"), !next.isEmpty, next != marker else {
                throw S3ResponseError(operation: "ListParts", reason: "truncated without a new NextPartNumberMarker")
            }
            marker = next
        }
        throw S3ResponseError(operation: "ListParts", reason: "more than \(configuration.maxListPages) pages")
    }

    /// ListMultipartUploads: the uploads in progress whose key starts with `prefix`, following the pages.
    public func listMultipartUploads(prefix: String) async throws -> [S3MultipartUpload] {
        try await listMultipartUploads(prefix: prefix, pageSize: 1000)
    }

    /// `listMultipartUploads` with `pageSize` uploads a page (1...1000), so the tests can make it follow several pages.
    package func listMultipartUploads(prefix: String, pageSize: Int) async throws -> [S3MultipartUpload] {
        var uploads: [S3MultipartUpload] = []
        var markers: (key: String, uploadID: String)?
        for _ in 0..<configuration.maxListPages {
            var query = [("uploads", ""), ("prefix", prefix), ("max-uploads", String(pageSize))]
            if let markers { query += [("key-marker", markers.key), ("upload-id-marker", markers.uploadID)] }
            let root = try await exchangeXML(.GET, key: nil, query: query, operation: "ListMultipartUploads",
                                             cap: Caps.listingPage)
            guard root.name == "ListMultipartUploadsResult" else {
                throw S3ResponseError(operation: "ListMultipartUploads", reason: "root <\(root.name)>")
            }
            for upload in root.children("Upload") {
                guard let key = upload.text("Key"), let uploadID = upload.text("UploadId"),
                      let initiated = upload.text("Initiated").flatMap(Self.parseISO8601) else {
                    throw S3ResponseError(operation: "ListMultipartUploads",
                                          reason: "an <Upload> without Key, UploadId or Initiated")
                }
                uploads.append(S3MultipartUpload(key: key, uploadID: uploadID, initiated: initiated))
            }
            guard root.text("IsTruncated") == "true" else { return uploads }
            guard let key = root.text("NextKeyMarker"), let uploadID = root.text("NextUploadIdMarker"),
                  !key.isEmpty, key != markers?.key || uploadID != markers?.uploadID else {
                throw S3ResponseError(operation: "ListMultipartUploads", reason: "truncated without new markers")
            }
            markers = (key, uploadID)
        }
        throw S3ResponseError(operation: "ListMultipartUploads", reason: "more than \(configuration.maxListPages) pages")
    }

    // MARK: Listing and the bucket

    /// ListObjectsV2: every object whose key starts with `prefix`, in key order, following continuation tokens.
    public func listObjects(prefix: String) async throws -> [S3ObjectInfo] {
        try await listObjects(prefix: prefix, pageSize: 1000)
    }

    /// `listObjects` with `pageSize` keys a page (1...1000), so the tests can make it follow several pages.
    package func listObjects(prefix: String, pageSize: Int) async throws -> [S3ObjectInfo] {
        var objects: [S3ObjectInfo] = []
        var token: String?
        for _ in 0..<configuration.maxListPages {
            var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(pageSize))]
            if let token { query.append(("continuation-token", token)) }
            let root = try await exchangeXML(.GET, key: nil, query: query, operation: "ListObjectsV2", cap: Caps.listingPage)
            guard root.name == "ListBucketResult" else {
                throw S3ResponseError(operation: "ListObjectsV2", reason: "root <\(root.name)>")
            }
            for entry in root.children("Contents") {
                guard let key = entry.text("Key"), let size = entry.text("Size").flatMap({ Int64($0) }),
                      let etag = entry.text("ETag"), let modified = entry.text("LastModified").flatMap(Self.parseISO8601)
                else {
                    throw S3ResponseError(operation: "ListObjectsV2",
                                          reason: "a <Contents> without Key, Size, ETag or LastModified")
                }
                objects.append(S3ObjectInfo(key: key, size: size, etag: etag, lastModified: modified))
            }
            guard root.text("IsTruncated") == "true" else { return objects }
            guard let next = root.text("NextContinuationToken"), !next.isEmpty, next != token else {
                throw S3ResponseError(operation: "ListObjectsV2", reason: "truncated without a new NextContinuationToken")
            }
            token = next
        }
        throw S3ResponseError(operation: "ListObjectsV2", reason: "more than \(configuration.maxListPages) pages")
    }

    /// CreateBucket for the configured bucket; a bucket we already own is fine (`BucketAlreadyOwnedByYou`).
    public func createBucket() async throws {
        var body: ByteBuffer?
        if configuration.region != "us-east-1" {
            // S3 API reference, CreateBucket: outside us-east-1 the region is named in the body.
            body = ByteBuffer(string: "<CreateBucketConfiguration><LocationConstraint>"
                + Self.escapeXML(configuration.region) + "</LocationConstraint></CreateBucketConfiguration>")
        }
        let response = try await send(.PUT, key: nil, body: body, operation: "CreateBucket")
        if response.status == .ok {
            _ = try await response.body.collect(upTo: Caps.errorBody)
            return
        }
        let error = await failure(response, operation: "CreateBucket", key: nil)
        if error.status == 409 && error.code == "BucketAlreadyOwnedByYou" { return }
        throw error
    }

    // MARK: The exchange

    /// The path of `key` in the bucket (`/bucket/key`, each byte of the key but `/` and the unreserved characters
    /// percent-encoded, SigV4's rule), or of the bucket itself.
    package static func path(bucket: String, key: String?) -> String {
        "/" + SigV4Signer.uriEncode(bucket, keepSlash: false)
            + (key.map { "/" + SigV4Signer.uriEncode($0, keepSlash: true) } ?? "")
    }

    /// The `Host` header for `endpoint`: its host, and its port unless the scheme's default (what S3 signs).
    package static func hostHeader(_ endpoint: URL) -> String {
        let host = endpoint.host ?? ""
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        guard let port = endpoint.port else { return bracketed }
        let isDefault = (endpoint.scheme == "http" && port == 80) || (endpoint.scheme == "https" && port == 443)
        return isDefault ? bracketed : "\(bracketed):\(port)"
    }

    /// Signs and sends one request; the answer's body is the caller's to read.
    private func send(_ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
                      body: ByteBuffer? = nil, operation: String) async throws -> HTTPClientResponse {
        let payloadHash: String
        if let body, body.readableBytes > Self.signedPayloadLimit {
            payloadHash = SigV4Signer.unsignedPayload
        } else {
            var digest = SHA256Digest()
            if let body { digest.update(body) }
            payloadHash = digest.finalize().hexString
        }
        let path = Self.path(bucket: configuration.bucket, key: key)
        let signed = signer.sign(method: method.rawValue, host: Self.hostHeader(configuration.endpoint), path: path,
                                 query: query, headers: headers, payloadHash: payloadHash, date: Date())
        var base = configuration.endpoint.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        var request = HTTPClientRequest(url: base + path + (signed.canonicalQuery.isEmpty ? "" : "?" + signed.canonicalQuery))
        request.method = method
        for header in signed.headers { request.headers.add(name: header.name, value: header.value) }
        if let body { request.body = .bytes(body) }
        return try await httpClient.execute(request, timeout: .milliseconds(Int64(configuration.requestTimeout * 1000)))
    }

    /// Sends a request whose success answer is an XML document, and parses it (at most `cap` bytes).
    private func exchangeXML(_ method: HTTPMethod, key: String?, query: [(String, String)], headers: [(String, String)] = [],
                             body: ByteBuffer? = nil, operation: String, cap: Int) async throws -> S3XMLElement {
        let response = try await send(method, key: key, query: query, headers: headers, body: body, operation: operation)
        try await expect(response, [200], operation: operation, key: key)
        let bytes: ByteBuffer
        do {
            bytes = try await response.body.collect(upTo: cap)
        } catch is NIOTooManyBytesError {
            throw S3ResponseError(operation: operation, reason: "answer longer than \(cap) bytes")
        }
        guard let root = S3XMLElement.parse(Data(bytes.readableBytesView)) else {
            throw S3ResponseError(operation: operation, reason: "answer is not well-formed XML")
        }
        return root
    }

    /// Throws the answer's `S3Error` unless its status is one of `statuses`.
    private func expect(_ response: HTTPClientResponse, _ statuses: [UInt], operation: String, key: String?) async throws {
        guard !statuses.contains(response.status.code) else { return }
        throw await failure(response, operation: operation, key: key)
    }

    /// The `S3Error` of an error answer: its status and the `<Error>` body's Code and Message when it has them.
    private func failure(_ response: HTTPClientResponse, operation: String, key: String?) async -> S3Error {
        let bytes = try? await response.body.collect(upTo: Caps.errorBody)
        let root = bytes.flatMap { $0.readableBytes > 0 ? S3XMLElement.parse(Data($0.readableBytesView)) : nil }
        let error = root?.name == "Error" ? root : nil
        return S3Error(status: response.status.code, code: error?.text("Code"), message: error?.text("Message"),
                       operation: operation, key: key)
    }

    private func etag(_ response: HTTPClientResponse, operation: String) throws -> String {
        guard let etag = response.headers.first(name: "etag"), !etag.isEmpty else {
            throw S3ResponseError(operation: operation, reason: "no ETag header")
        }
        return etag
    }

    static func escapeXML(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(c)
            }
        }
        return out
    }

    /// S3's XML timestamps: ISO 8601 in UTC, with or without milliseconds (`2026-11-29T15:04:05.000Z`).
    static func parseISO8601(_ text: String) -> Date? {
        (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// `Last-Modified`: an IMF-fixdate (RFC 9110 §5.6.7, `Sun, 06 Nov 1994 08:49:37 GMT`).
    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text)
    }
}
