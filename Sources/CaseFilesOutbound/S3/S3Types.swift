import AsyncHTTPClient
import Foundation
import NIOCore

/// Where the S3-compatible store is and who we are to it. Path-style addressing: every request goes to
/// `endpoint/bucket/key`, so any endpoint works without DNS for each bucket (OpenStack Swift's s3api, MinIO...).
public struct S3Configuration: Sendable {
    /// `http(s)://host[:port]`, no path: the store's S3 API.
    public var endpoint: URL
    /// The SigV4 region (`us-east-1` for most non-AWS stores).
    public var region: String
    public var bucket: String
    public var accessKeyID: String
    public var secretAccessKey: String
    /// The longest wait for one request other than a GET's body (seconds): the whole exchange for requests with
    /// small answers, the time to the response head for `getObject`, whose body is bounded by the HTTP client's
    /// read timeout instead (`S3Client.httpClientConfiguration`).
    public var requestTimeout: TimeInterval
    /// The most pages one listing follows before it throws `S3ResponseError.tooManyPages` (1,000 entries a page).
    public var maxListPages: Int

    public init(endpoint: URL, region: String, bucket: String, accessKeyID: String, secretAccessKey: String,
                requestTimeout: TimeInterval = 120, maxListPages: Int = 1000) {
        self.endpoint = endpoint
        self.region = region
        self.bucket = bucket
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.requestTimeout = requestTimeout
        self.maxListPages = maxListPages
    }
}

/// An answer from the store that is not a success: the HTTP status and, when the body said so, S3's error `Code`
/// (`NoSuchKey`, `SignatureDoesNotMatch`, `EntityTooSmall`...; S3 API reference, "Error responses").
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public var status: UInt
    /// The `<Code>` of the error body; nil when there was none (HEAD answers have no body).
    public var code: String?
    public var message: String?
    /// The operation (`PutObject`...) and key it answered, for logs.
    public var operation: String
    public var key: String?

    public init(status: UInt, code: String?, message: String?, operation: String, key: String?) {
        self.status = status
        self.code = code
        self.message = message
        self.operation = operation
        self.key = key
    }

    public var description: String {
        "S3 \(operation)\(key.map { " \($0)" } ?? ""): HTTP \(status) \(code ?? "(no code)")\(message.map { ": \($0)" } ?? "")"
    }
}

/// A success answer that could not be understood: not the XML it should be, bigger than its cap, a header
/// missing, or a listing longer than `S3Configuration.maxListPages`.
public struct S3ResponseError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var reason: String

    public init(operation: String, reason: String) {
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "S3 \(operation): unusable answer: \(reason)" }
}

/// An object's identity as HEAD or a listing gives it.
public struct S3ObjectInfo: Sendable, Equatable {
    public var key: String
    /// Bytes.
    public var size: Int64
    /// As the store sent it, quotes included (`"9b2cf535f27731c974343645a3985328"`).
    public var etag: String
    public var lastModified: Date

    public init(key: String, size: Int64, etag: String, lastModified: Date) {
        self.key = key
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
    }
}

/// A part of a multipart upload: what `completeMultipartUpload` needs (number and ETag) and, from `listParts`, its size.
public struct S3CompletedPart: Sendable, Equatable {
    /// 1...10,000.
    public var partNumber: Int
    /// As the store sent it, quotes included.
    public var etag: String
    /// Bytes; nil when not known (parts built from `uploadPart`'s answers).
    public var size: Int64?

    public init(partNumber: Int, etag: String, size: Int64? = nil) {
        self.partNumber = partNumber
        self.etag = etag
        self.size = size
    }
}

/// A multipart upload in progress, as ListMultipartUploads gives it.
public struct S3MultipartUpload: Sendable, Equatable {
    public var key: String
    public var uploadID: String
    public var initiated: Date

    public init(key: String, uploadID: String, initiated: Date) {
        self.key = key
        self.uploadID = uploadID
        self.initiated = initiated
    }
}

/// An object's bytes as they arrive: iterate once; never held whole in memory (the HTTP client's backpressure
/// holds the connection while the consumer is slow).
public struct S3ObjectBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    /// `Content-Length` of the answer (the range's length for a ranged GET).
    public let contentLength: Int64?
    private let body: HTTPClientResponse.Body

    init(contentLength: Int64?, body: HTTPClientResponse.Body) {
        self.contentLength = contentLength
        self.body = body
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: HTTPClientResponse.Body.AsyncIterator
        public mutating func next() async throws -> ByteBuffer? { try await base.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: body.makeAsyncIterator()) }
}
