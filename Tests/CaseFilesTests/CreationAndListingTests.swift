@testable import CaseFilesCore
@testable import CaseFilesDatabase
import Foundation
import Testing

/// Issue #17's remaining gaps at the metadata store: a creation checked in its own insert's transaction, and the
/// case listing's pages.
@Suite struct CreationAndListingTests {
    typealias Store = MetadataStoreTests

    /// What the admission closure saw, thrown back out of the transaction.
    struct Seen: Error, Equatable {
        var usage: UploadUsage
        var reserved: Int64
    }

    @Test func aCreationIsAdmittedOnTheUsageReadInItsTransactionAndARefusalInsertsNothing() async throws {
        let (database, root) = try await Store.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Store.upload("a", length: 100, offset: 30))
        try await database.createUpload(Store.upload("done", length: 5, offset: 5, state: .verified, sha256: "aa"))

        await #expect(throws: Seen(usage: UploadUsage(unfinishedByUser: 1, unfinishedInCase: 1, caseBytes: 105),
                                   reserved: 70)) {
            try await database.createUpload(Store.upload("b", length: 50)) { usage, reserved in
                throw Seen(usage: usage, reserved: reserved)
            }
        }
        #expect(try await database.upload(id: "b") == nil)  // refused: rolled back

        try await database.createUpload(Store.upload("b", length: 50)) { _, _ in }
        #expect(try await database.upload(id: "b")?.length == 50)
        #expect(try await database.reservedBytes() == 120)
    }

    @Test func theListingPagesInCreationThenIdOrderFromAnyPlaceInIt() async throws {
        let (database, root) = try await Store.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        let id = { (digit: Character) in String(repeating: digit, count: 32) }
        // "c…" and "b…" share a millisecond: the id breaks the tie. Terminated uploads are not listed.
        try await database.createUpload(Store.upload(id("c"), at: Store.t0 + 1))
        try await database.createUpload(Store.upload(id("b"), at: Store.t0 + 1))
        try await database.createUpload(Store.upload(id("a"), at: Store.t0 + 2))
        try await database.createUpload(Store.upload(id("d"), at: Store.t0 + 3))
        try await database.terminateUpload(id: id("d"), at: Store.t0 + 3)
        try await database.createUpload(Store.upload(id("f"), length: 0, state: .verified, sha256: "aa", at: Store.t0))

        let page = { (cursor: String) in
            try await database.caseListing("00000001", after: try #require(ListingPosition(cursor: cursor)), limit: 2)
                .map(\.id)
        }
        let first = try await database.caseListing("00000001", after: nil, limit: 2)
        #expect(first.map(\.id) == [id("f"), id("b")])
        let cursor = ListingPosition(first[1]).cursor
        #expect(cursor == "1790000001000-" + id("b"))  // the stored millisecond, exactly
        #expect(try await page(cursor) == [id("c"), id("a")])
        #expect(try await page("1790000002000-" + id("a")) == [])
        // A place whose upload does not exist (gone, or never was) still says where to go on.
        #expect(try await page("1790000001000-" + id("0")) == [id("b"), id("c")])
        #expect(try await page("1790000001001-" + id("0")) == [id("a")])
        for bad in ["", "1-b", "-" + id("0"), "+1-" + id("0"), "1-2-" + id("0"), "1-" + id("A")] {
            #expect(ListingPosition(cursor: bad) == nil, "\(bad)")
        }
    }
}
