@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesPostgres
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Testing

/// The worker threads every test shares (the application owns its own; tests are one application).
let testWorkers = WorkerThreads()

/// The one switch between the metadata stores: with `CASEFILES_TEST_DATABASE=postgres://USER@HOST:PORT/DATABASE`
/// (what `Scripts/postgres start` prints) every test that builds its store here (`TestWorld`, `MetadataStoreTests`)
/// runs on PostgreSQL, each in a database of its own made on that server; without it, on a SQLite file in a temp
/// directory.
enum TestDatabase {
    static let variable = "CASEFILES_TEST_DATABASE"

    /// The server's URL from the environment; nil: SQLite. A value that is not a PostgreSQL URL stops the run.
    static let postgres: PostgresLocation? = {
        guard let text = ProcessInfo.processInfo.environment[variable], !text.isEmpty else { return nil }
        guard let location = PostgresLocation(text) else { fatalError("\(variable) must be \(PostgresLocation.expected)") }
        return location
    }()

    /// A migrated store in a new, empty database on `postgres`'s server; nil when the tests run on SQLite.
    static func freshPostgres() async throws -> PostgresMetadataStore? {
        guard let server = postgres else { return nil }
        let name = "casefiles_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: server.host, port: server.port, username: server.username,
                                 password: server.password, database: server.database, tls: .disable),
            id: 0, logger: Logger(label: "test"))
        try await connection.query("CREATE DATABASE \(unescaped: name)", logger: Logger(label: "test"))
        try await connection.close()
        return try await PostgresMetadataStore.connect(server.database(name))
    }
}

/// A fresh storage root with one case (00001413, account ACME) and a user of every role.
final class TestWorld: Sendable {
    let root: URL
    let services: AppServices
    let customer: String
    let colleague: String
    let otherCustomer: String
    let engineer: String
    let admin: String
    let caseNumber = "00001413"

    let clock = TestClock()
    /// The PostgreSQL store under `services` when `CASEFILES_TEST_DATABASE` is set (closed with the world).
    let postgres: PostgresMetadataStore?

    /// The rate limit is off unless a test sets one: tests make many changes a second as one user.
    init(limits: UploadLimits = .init(minFreeBytes: 0), security: SecurityPolicy = .init(rateLimitPerMinute: 0)) async throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("casefiles-test-\(UUID().uuidString)")
        let clock = self.clock
        let root = self.root
        let postgres = try await TestDatabase.freshPostgres()
        self.postgres = postgres
        services = try await testWorkers.storage.blockingIO {
            try AppServices.open(storage: root, workers: testWorkers, metadata: postgres, limits: limits,
                                 security: security, now: { clock.now })
        }
        let database = services.database
        func user(_ name: String, _ role: Role, _ account: String?) async throws -> String {
            let token = AccessToken.generate()
            _ = try await database.createUser(
                User(name: name, role: role, account: account, tokenHash: AccessToken.hash(token), createdAt: Date()))
            return token
        }
        customer = try await user("carol", .customer, "ACME")
        colleague = try await user("colin", .customer, "ACME")
        otherCustomer = try await user("oscar", .customer, "OTHER")
        engineer = try await user("erin", .engineer, nil)
        admin = try await user("adam", .admin, nil)
        let draft = try CaseLifecycle.open(
            account: "ACME", subject: "Database crash", number: caseNumber, priority: .high, requestType: .support, at: Date())
        _ = try await services.database.createCase(draft, numberGiven: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: root)
        if let postgres { Task { await postgres.shutdown() } }
    }

    /// Runs `body` against the real server on a loopback port.
    func withServer<T: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        let app = try await buildApplication(
            AppConfiguration(host: "127.0.0.1", port: 0, storage: root, logLevel: .warning), services: services)
        return try await app.test(.live, body)
    }
}

/// A clock tests can move.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date()
    var now: Date { lock.withLock { current } }
    func advance(by seconds: TimeInterval) { lock.withLock { current += seconds } }
    func set(_ date: Date) { lock.withLock { current = date } }
}

extension HTTPFields {
    static func tus(_ token: String, _ extra: [HTTPField.Name: String] = [:]) -> HTTPFields {
        var fields: HTTPFields = [.authorization: "Bearer \(token)", HTTPField.Name("Tus-Resumable")!: "1.0.0"]
        for (name, value) in extra { fields[name] = value }
        return fields
    }
}

extension HTTPField.Name {
    static let uploadOffset = Self("Upload-Offset")!
    static let uploadLength = Self("Upload-Length")!
    static let uploadMetadata = Self("Upload-Metadata")!
    static let uploadChecksum = Self("Upload-Checksum")!
    static let uploadDeferLength = Self("Upload-Defer-Length")!
    static let reprDigest = Self("Repr-Digest")!
    static let tusResumable = Self("Tus-Resumable")!
    static let tusVersion = Self("Tus-Version")!
}

func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

func metadata(filename: String = "server.log", sha256: String? = nil) -> String {
    var pairs = ["filename \(base64(filename))"]
    if let sha256 { pairs.append("sha256 \(base64(sha256))") }
    return pairs.joined(separator: ",")
}

/// Deterministic pseudo-random test bytes.
func testBytes(_ count: Int, seed: UInt64 = 42) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

func sha256Hex(_ bytes: [UInt8]) -> String { SHA256Digest.hash(bytes).hexString }

func checksumHeader(_ bytes: some Collection<UInt8>) -> String {
    "sha256 " + Data(SHA256Digest.hash(Array(bytes))).base64EncodedString()
}

/// JSON error body: `{"error": code, "message": ...}`.
func errorCode(_ response: TestResponse) -> String? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: String],
          let message = object["message"], !message.isEmpty
    else { return nil }
    return object["error"]
}

extension TestClientProtocol {
    /// Creates an upload on the world's case and returns its path.
    func createUpload(_ world: TestWorld, token: String? = nil, length: Int, sha256: String? = nil,
                      filename: String = "server.log") async throws -> String {
        let response = try await execute(
            uri: "/api/v1/cases/\(world.caseNumber)/uploads", method: .post,
            headers: .tus(token ?? world.customer, [.uploadLength: String(length),
                                                     .uploadMetadata: metadata(filename: filename, sha256: sha256)]))
        #expect(response.status == .created, "creation failed: \(String(buffer: response.body))")
        return try #require(response.headers[.location])
    }

    func patch(_ path: String, token: String, offset: Int, bytes: some Collection<UInt8>,
               checksum: String? = nil, extra: [HTTPField.Name: String] = [:]) async throws -> TestResponse {
        var fields = HTTPFields.tus(token, extra)
        fields[.uploadOffset] = String(offset)
        fields[.contentType] = "application/offset+octet-stream"
        if let checksum { fields[.uploadChecksum] = checksum }
        return try await execute(uri: path, method: .patch, headers: fields, body: ByteBuffer(bytes: Array(bytes)))
    }

    func offset(_ path: String, token: String) async throws -> Int? {
        let response = try await execute(uri: path, method: .head, headers: .tus(token))
        return response.headers[.uploadOffset].flatMap { Int($0) }
    }
}
