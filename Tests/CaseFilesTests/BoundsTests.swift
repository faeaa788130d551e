@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import Testing

/// Issue #17's rules that need no network: the rate limiter's bucket, the reservation and usage queries, and the
/// expiry service's pruning of signed links.
@Suite struct BoundsTests {
    static let t0 = Date(timeIntervalSince1970: 1_790_000_000)

    // MARK: - RateLimiter

    @Test func sixtyAMinuteThenRefusedWithTheWaitForTheNextToken() {
        var limiter = RateLimiter(limit: 60, window: 60)
        for _ in 0..<60 { #expect(limiter.take(user: 1, at: Self.t0) == .allowed) }
        #expect(limiter.take(user: 1, at: Self.t0) == .limited(retryAfter: 1))  // one token a second
        #expect(limiter.take(user: 2, at: Self.t0) == .allowed)  // each user has a bucket of their own
        #expect(limiter.take(user: 1, at: Self.t0 + 1) == .allowed)
        #expect(limiter.take(user: 1, at: Self.t0 + 1) == .limited(retryAfter: 1))
    }

    @Test func retryAfterIsTheWholeSecondsUntilTheNextToken() {
        var limiter = RateLimiter(limit: 5, window: 60)  // one token every 12 s
        for _ in 0..<5 { #expect(limiter.take(user: 7, at: Self.t0) == .allowed) }
        #expect(limiter.take(user: 7, at: Self.t0) == .limited(retryAfter: 12))
        #expect(limiter.take(user: 7, at: Self.t0 + 2.5) == .limited(retryAfter: 10))
        #expect(limiter.take(user: 7, at: Self.t0 + 12) == .allowed)
    }

    @Test func theBucketRefillsOnlyToTheLimit() {
        var limiter = RateLimiter(limit: 3, window: 60)
        #expect(limiter.take(user: 1, at: Self.t0) == .allowed)
        let later = Self.t0 + 3600
        for _ in 0..<3 { #expect(limiter.take(user: 1, at: later) == .allowed) }
        #expect(limiter.take(user: 1, at: later) == .limited(retryAfter: 20))
    }

    @Test func zeroTurnsItOff() {
        var limiter = RateLimiter(limit: 0)
        for _ in 0..<1000 { #expect(limiter.take(user: 1, at: Self.t0) == .allowed) }
        #expect(limiter.trackedUsers == 0)
    }

    @Test func trackedUsersAreBoundedAndTheLeastRecentlyUsedGoesFirst() {
        var limiter = RateLimiter(limit: 1, window: 60, maxTrackedUsers: 3)
        for user in Int64(1)...3 { #expect(limiter.take(user: user, at: Self.t0) == .allowed) }
        #expect(limiter.take(user: 1, at: Self.t0) == .limited(retryAfter: 60))  // user 1 is now the most recent
        #expect(limiter.take(user: 4, at: Self.t0) == .allowed)  // evicts user 2, used longest ago
        #expect(limiter.trackedUsers == 3)
        #expect(limiter.take(user: 2, at: Self.t0) == .allowed)  // forgotten: a full bucket again (evicts 3)
        #expect(limiter.take(user: 1, at: Self.t0) == .limited(retryAfter: 60))  // still tracked, still empty
        #expect(limiter.trackedUsers == 3)
    }

    // MARK: - The queries the rules count with

    @Test func reservationsAreDeclaredButUnwrittenBytesOfUnfinishedUploads() async throws {
        let (database, root) = try await MetadataStoreTests.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(try await database.reservedBytes() == 0)
        try await database.createUpload(MetadataStoreTests.upload("a", length: 100))
        try await database.createUpload(MetadataStoreTests.upload("b", length: 50))
        try await database.createUpload(MetadataStoreTests.upload("deferred", length: nil))
        #expect(try await database.reservedBytes() == 150)
        try await database.recordAppend(id: "a", by: 1, from: 0, to: 40, digestState: Data([2]), completion: nil, at: Self.t0)
        #expect(try await database.reservedBytes() == 110)  // released as bytes arrive
        try await database.terminateUpload(id: "b", at: Self.t0)
        #expect(try await database.reservedBytes() == 60)  // and on termination
        try await database.recordAppend(id: "a", by: 1, from: 40, to: 100, digestState: Data([3]),
                                        completion: .verified(sha256: String(repeating: "a", count: 64)), at: Self.t0)
        #expect(try await database.reservedBytes() == 0)  // and on completion
        let usage = try await database.uploadUsage(caseNumber: "00000001", userID: 1)
        #expect(usage == UploadUsage(unfinishedByUser: 1, unfinishedInCase: 1, caseBytes: 100))
        #expect(try await database.appends(uploadID: "a") == [
            AppendRecord(uploadID: "a", fromOffset: 0, toOffset: 40, userID: 1, at: Self.t0),
            AppendRecord(uploadID: "a", fromOffset: 40, toOffset: 100, userID: 1, at: Self.t0),
        ])
    }

    @Test func theExpiryServicePrunesLinksNoLongerUsable() async throws {
        let world = try await TestWorld(security: SecurityPolicy(maxLinkLifetime: 60, rateLimitPerMinute: 0))
        let database = world.services.database
        let upload = MetadataStoreTests.upload("0123456789abcdef0123456789abcdef", case: world.caseNumber,
                                               length: 0, state: .verified, sha256: String(repeating: "e", count: 64),
                                               at: world.clock.now)
        try await database.createUpload(upload)
        let now = world.clock.now
        let links = [
            DownloadLink(nonce: "expired", uploadID: upload.id, userID: 1, expiresAt: now - 1, issuedAt: now - 30),
            DownloadLink(nonce: "issued-too-long-ago", uploadID: upload.id, userID: 1, expiresAt: now + 600,
                         issuedAt: now - 61),
            DownloadLink(nonce: "live", uploadID: upload.id, userID: 1, expiresAt: now + 30, issuedAt: now - 30),
        ]
        for link in links { try await database.createDownloadLink(link) }
        let service = UploadExpiryService(services: world.services, interval: .seconds(600), logger: .init(label: "test"))
        _ = try await service.sweep()
        #expect(try await database.downloadLink(nonce: "expired", uploadID: upload.id) == nil)
        #expect(try await database.downloadLink(nonce: "issued-too-long-ago", uploadID: upload.id) == nil)
        #expect(try await database.downloadLink(nonce: "live", uploadID: upload.id)?.nonce == "live")
    }
}
