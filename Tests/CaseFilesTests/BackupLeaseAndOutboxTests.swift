@testable import CaseFilesCore
@testable import CaseFilesDatabase
import Foundation
import Testing

/// The backup lease holding off every blob removal, and the outbox written by the state changes' own transactions
/// (a real SQLite file, no HTTP).
@Suite struct BackupLeaseAndOutboxTests {
    typealias Store = MetadataStoreTests
    static let t0 = MetadataStoreTests.t0

    @Test func aHeldLeaseHoldsOffThePurgeAndTheExpirySweepAndExpires() async throws {
        let (database, root) = try await Store.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Store.upload("idle", length: 10, offset: 4))
        try await database.createUpload(Store.upload("ver", length: 10, offset: 10, state: .verified, sha256: "aa"))
        let later = Self.t0 + 2 * Store.expiry

        #expect(try await database.acquireBackupLease(holder: "b1", until: later + 60, at: later) == nil)
        #expect(try await database.acquireBackupLease(holder: "b2", until: later + 120, at: later)
                == BackupLease(holder: "b1", expiresAt: later + 60))
        #expect(try await database.expireUploads(at: later, expiry: Store.expiry) == [])
        let verified = try #require(try await database.upload(id: "ver"))
        await #expect(throws: BackupInProgress.self) { try await database.purgeUpload(verified, runID: 1, at: later) }
        #expect(try await database.upload(id: "ver")?.state == .verified)
        #expect(try await database.upload(id: "idle")?.state == .uploading)

        // A crashed backup: its lease ends by itself.
        #expect(try await database.backupLease(at: later + 60) == nil)
        #expect(try await database.expireUploads(at: later + 60, expiry: Store.expiry) == ["idle"])
        #expect(try await database.renewBackupLease(holder: "b1", until: later + 600))  // still its row
        try await database.releaseBackupLease(holder: "b1")
        #expect(try await database.backupLease(at: later) == nil)
    }

    @Test func eachStateChangeWritesItsEventInItsOwnTransaction() async throws {
        let (database, root) = try await Store.seeded()
        defer { try? FileManager.default.removeItem(at: root) }
        try await database.createUpload(Store.upload("good"))
        try await database.createUpload(Store.upload("bad"))
        try await database.createUpload(Store.upload("idle", at: Self.t0 + 1))
        try await database.recordAppend(id: "good", by: 1, from: 0, to: 10, digestState: Data([2]),
                                        completion: .verified(sha256: "ab"), at: Self.t0)
        try await database.recordAppend(id: "bad", by: 1, from: 0, to: 10, digestState: Data([2]),
                                        completion: .failed(sha256: "cd"), at: Self.t0)
        // A refused append (wrong offset) writes no event: it rolls back with its transaction.
        await #expect(throws: UploadChangedUnderWriter.self) {
            try await database.recordAppend(id: "good", by: 1, from: 0, to: 10, digestState: Data([2]),
                                            completion: .verified(sha256: "ab"), at: Self.t0)
        }
        #expect(try await database.expireUploads(at: Self.t0 + 1 + Store.expiry, expiry: Store.expiry) == ["idle"])

        let events = try await database.events(state: .pending, limit: 10).sorted { $0.body < $1.body }
        #expect(events.count == 3)
        let bodies = try events.map { try JSONSerialization.jsonObject(with: Data($0.body.utf8)) as! [String: Any] }
        let data = bodies.map { $0["data"] as! [String: Any] }
        #expect(Set(events.map(\.type)) == [.attachmentVerified, .uploadFailed])
        #expect(Set(data.map { "\($0["uploadID"]!) \($0["reason"] ?? "-")" }) == ["good -", "bad sha256_mismatch", "idle expired"])
        #expect(zip(events, bodies).allSatisfy { $0.id == $1["id"] as? String && $0.id.hasPrefix("evt_") })

        // Delivered events are pruned after their time; pending ones never are.
        var delivered = events[0]
        delivered.state = .delivered
        delivered.finishedAt = Self.t0
        try await database.recordAttempt(delivered)
        #expect(try await database.pruneEvents(finishedBefore: Self.t0 + 1) == 1)
        #expect(try await database.events(state: nil, limit: 10).count == 2)
        #expect(try await database.dueEvents(at: Self.t0 + 2 + Store.expiry, limit: 10).count == 2)
    }

    @Test func theSignatureIsHMACSHA256OverTimestampDotBody() {
        // RFC 4231 test case 2's key and message, split as "<t>.<body>" = "what do ya want " + "for nothing?".
        let header = WebhookSignature.header(body: "for nothing?", timestamp: 0, secret: Array("Jefe".utf8))
        #expect(header == "t=0,v1=" + HMACSHA256.sign("0.for nothing?", key: Array("Jefe".utf8)).hexString)
        #expect(HMACSHA256.sign("what do ya want for nothing?", key: Array("Jefe".utf8)).hexString
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func retriesBackOffExponentiallyCappedForADay() {
        #expect((1...5).map { WebhookRetry.delay(afterAttempt: $0, base: 0.2) } == [0.2, 0.4, 0.8, 1.6, 3.2])
        #expect(WebhookRetry.delay(afterAttempt: 30, base: 30) == 3600)
        #expect(!WebhookRetry.isPastWindow(createdAt: Self.t0, at: Self.t0 + 86399))
        #expect(WebhookRetry.isPastWindow(createdAt: Self.t0, at: Self.t0 + 86400))
    }
}
