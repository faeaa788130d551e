import Foundation
import Logging
import NIOPosix
import Testing
@testable import CaseFilesCore
import CaseFilesEngine

/// The bundle indexer takes verified attachments oldest first: one whose file cannot be read must be reported
/// and passed over, never retried forever ahead of the rest (found by `Scripts/bench`, which removes finished
/// blobs between runs: the indexer logged "will retry" every second and indexed nothing else).
@Suite struct BundleIndexServiceTests {
    @Test func anAttachmentWhoseFileIsMissingIsMarkedUnreadableAndPassedOver() async throws {
        let world = try await TestWorld()
        let database = world.services.database
        let now = world.clock.now
        let id = String(repeating: "ab", count: 16)
        try await database.createUpload(Upload(
            id: id, caseNumber: world.caseNumber, filename: "bundle.tar.gz", rawMetadata: "", length: 10, offset: 0,
            state: .uploading, digestState: SHA256Digest().savedState, createdBy: 1, createdAt: now, updatedAt: now))
        try await database.recordAppend(id: id, by: 1, from: 0, to: 10, digestState: Data([2]),
                                        completion: .verified(sha256: String(repeating: "0", count: 64)), at: now)
        // No blob was ever created for it.
        let service = BundleIndexService(services: world.services, limits: .init(), interval: .seconds(1),
                                         logger: Logger(label: "test"))
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        #expect(try await service.indexNext(on: thread))
        let index = try #require(try await database.bundleIndex(attachmentID: id))
        #expect(index.state == .unreadable)
        #expect(index.reason?.contains("could not be read") == true)
        #expect(try await service.indexNext(on: thread) == false)  // nothing else waits: it is not taken again
        try await thread.shutdownGracefully()
    }
}
