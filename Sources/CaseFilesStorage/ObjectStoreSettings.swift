import Foundation

/// Where blobs go when they are not files under the storage root: an S3-compatible bucket (`serve --blob-store
/// s3://BUCKET` and the `s3-*` settings). Plain values: the S3 blob store itself (`S3BlobStore`) lives in
/// CaseFilesObjectStorage, which `serve` builds from these.
public struct ObjectStoreSettings: Sendable, Equatable {
    /// The bucket (from `s3://BUCKET`); nil: blobs are files under the storage root.
    public var bucket: String?
    /// The store's S3 API, `http(s)://host[:port]`.
    public var endpoint: URL?
    /// The AWS Signature Version 4 region.
    public var region = "us-east-1"
    public var accessKeyID: String?
    /// Never shown nor logged (`config check` prints whether it is set).
    public var secretAccessKey: String?
    /// A file holding the secret access key (trailing whitespace ignored), read when `secretAccessKey` is not given.
    public var secretAccessKeyFile: String?
    /// The size of the first multipart-upload parts, in bytes (S3: at least 5 MiB, but the last); parts grow past
    /// it during an upload (`S3PartLayout`).
    public var partSize: Int64 = ObjectStoreSettings.defaultPartSize

    public static let defaultPartSize: Int64 = 8 << 20
    /// S3's smallest part but the last (Amazon S3 User Guide, "Multipart upload limits": 5 MiB).
    public static let minimumPartSize: Int64 = 5 << 20

    public init() {}

    /// The bucket of an `s3://BUCKET` URL (S3 bucket naming: 3 to 63 lower-case letters, digits, dots and hyphens);
    /// nil for anything else.
    public static func bucket(fromURL text: String) -> String? {
        guard text.hasPrefix("s3://") else { return nil }
        var name = text.dropFirst("s3://".count)
        if name.hasSuffix("/") { name = name.dropLast() }
        guard (3...63).contains(name.count),
              name.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-" })
        else { return nil }
        return String(name)
    }
}
