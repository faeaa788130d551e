@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import HummingbirdTesting
import Testing

/// The one mapping from errors to answers (`APIError.init(mapping:)`), over loopback against the real server.
@Suite struct ErrorMappingTests {
    /// tus 1.0: every response but OPTIONS carries `Tus-Resumable`, including those made outside the router
    /// (a 405) and those nothing expected (a 500).
    @Test func a405AndA500OnTusRoutesCarryTusResumable() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let path = try await client.createUpload(world, length: 10)
            let notAllowed = try await client.execute(uri: path, method: .put, headers: .tus(world.customer))
            #expect(notAllowed.status == .methodNotAllowed)
            #expect(notAllowed.headers[.tusResumable] == "1.0.0")
            #expect(errorCode(notAllowed) == "method_not_allowed")

            // Every shard folder name taken by a regular file: creating a blob fails as nothing expects.
            let blobs = world.root.appendingPathComponent("blobs")
            for shard in 0..<256 {
                let name = blobs.appendingPathComponent(String(format: "%02x", shard)).path
                if !FileManager.default.fileExists(atPath: name) { FileManager.default.createFile(atPath: name, contents: nil) }
            }
            let failed = try await client.execute(
                uri: "/api/v1/cases/\(world.caseNumber)/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "10", .uploadMetadata: metadata()]))
            #expect(failed.status == .internalServerError)
            #expect(failed.headers[.tusResumable] == "1.0.0")
            #expect(errorCode(failed) == "internal_error")
        }
    }

    /// A full disk is 507 wherever it happens: the domain's and storage's errors map by kind, not by place.
    @Test func everyFullDiskIs507AndEveryDomainKindHasItsStatus() {
        let request = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "x", path: "/"), body: .init(buffer: .init()))
        let logger = Logger(label: "test")
        #expect(APIError(mapping: StorageError.noSpace, request: request, logger: logger).status.code == 507)
        #expect(APIError(mapping: CaseFilesError.databaseFull, request: request, logger: logger).status.code == 507)
        let kinds: [(CaseFilesError.Kind, Int)] = [(.invalid, 400), (.forbidden, 403), (.notFound, 404), (.conflict, 409),
                                                  (.gone, 410), (.insufficientStorage, 507), (.unavailable, 503)]
        for (kind, code) in kinds {
            let mapped = APIError(mapping: CaseFilesError(kind, "x", "y"), request: request, logger: logger)
            #expect(Int(mapped.status.code) == code)
            #expect(mapped.code == "x")
        }
    }
}
