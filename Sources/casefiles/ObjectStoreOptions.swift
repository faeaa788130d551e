import AsyncHTTPClient
import Foundation
import CaseFilesEngine
import CaseFilesObjectStorage
import CaseFilesOutbound
import CaseFilesServer
import CaseFilesStorage

/// `serve --blob-store s3://BUCKET`: the S3 blob store made from the `s3-*` settings (`ObjectStoreSettings`), and
/// the HTTP client it sends with, which `serve` owns and shuts down after the application.
enum ObjectStoreOptions {
    /// The blob store of the command-line commands other than `serve`: the object store when the environment or
    /// `CASEFILES_CONFIG` names one (the settings `serve` reads, without flags); nil: files under the storage root.
    /// Its HTTP client lives as long as the process (a command is one process), so it is never shut down.
    static func fromEnvironment() throws -> BlobStoreFactory? {
        var configuration = try EffectiveConfiguration.resolve(
            arguments: [], configFile: nil, environment: ProcessInfo.processInfo.environment,
            defaults: AppConfiguration()).configuration
        guard let client = try configure(&configuration) else { return nil }
        commandClients.append(client)
        return configuration.blobStore
    }

    /// The command-line commands' clients, kept until the process exits (AsyncHTTPClient asserts that a client is
    /// shut down before it is released). Written only by the command's one task, before it opens anything.
    nonisolated(unsafe) private static var commandClients: [HTTPClient] = []

    /// Sets `configuration.blobStore` when a bucket is configured.
    /// - Returns: the HTTP client to shut down when the application has stopped; nil without a bucket.
    /// - Throws: `ConfigurationError` naming the missing setting or the unreadable secret file.
    static func configure(_ configuration: inout AppConfiguration) throws -> HTTPClient? {
        let settings = configuration.objectStore
        guard let bucket = settings.bucket else { return nil }
        guard let endpoint = settings.endpoint else {
            throw ConfigurationError(description: "blob-store s3://\(bucket) needs s3-endpoint, the store's S3 API: http(s)://HOST[:PORT]")
        }
        guard let accessKeyID = settings.accessKeyID else {
            throw ConfigurationError(description: "blob-store s3://\(bucket) needs s3-access-key-id")
        }
        let secret: String
        if let given = settings.secretAccessKey {
            secret = given
        } else if let file = settings.secretAccessKeyFile {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ConfigurationError(description: "s3-secret-access-key-file \(file): cannot be read (\(error.localizedDescription))")
            }
            secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !secret.isEmpty else { throw ConfigurationError(description: "s3-secret-access-key-file \(file) is empty") }
        } else {
            throw ConfigurationError(description: "blob-store s3://\(bucket) needs s3-secret-access-key (better: CASEFILES_S3_SECRET_ACCESS_KEY or s3-secret-access-key-file)")
        }
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: S3Client.httpClientConfiguration())
        let client = S3Client(
            configuration: S3Configuration(endpoint: endpoint, region: settings.region, bucket: bucket,
                                           accessKeyID: accessKeyID, secretAccessKey: secret),
            httpClient: httpClient)
        let partSize = settings.partSize
        configuration.blobStore = { threads in S3BlobStore(client: client, partSize: partSize, threads: threads) }
        return httpClient
    }
}
