@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// The handbook's lifecycle and the retention purge, with a clock the tests move.
@Suite struct RetentionTests {
    static let day: TimeInterval = 86400

    static func json(_ token: String) -> HTTPFields {
        [.authorization: "Bearer \(token)", .contentType: "application/json"]
    }

    static func post(_ client: some TestClientProtocol, _ path: String, token: String, _ body: String = "{}") async throws -> TestResponse {
        try await client.execute(uri: path, method: .post, headers: json(token), body: ByteBuffer(string: body))
    }

    static func newCase(_ world: TestWorld, _ number: String, account: String) async throws {
        _ = try await world.services.database.createCase(
            try CaseLifecycle.open(account: account, subject: "case \(number)", number: number, priority: nil,
                                    requestType: nil, at: world.clock.now), numberGiven: true)
    }

    /// Uploads a verified attachment to `number` and returns its id.
    static func attach(_ client: some TestClientProtocol, _ number: String, token: String, size: Int) async throws -> String {
        let created = try await client.execute(
            uri: "/api/v1/cases/\(number)/uploads", method: .post,
            headers: .tus(token, [.uploadLength: String(size), .uploadMetadata: metadata(filename: "f\(size).log")]))
        let path = try #require(created.headers[.location], "\(created.status)")
        #expect(try await client.patch(path, token: token, offset: 0, bytes: testBytes(size)).status == .noContent)
        return String(path.split(separator: "/").last!)
    }

    func blobBytes(_ world: TestWorld) async throws -> Int64 {
        try await world.services.blobs.storedIDs().reduce(0) { total, id in
            let path = world.root.appendingPathComponent("blobs/\(id.prefix(2))/\(id)").path
            return total + ((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int64) ?? 0)
        }
    }

    @Test func aCaseClosedAtTKeepsEveryByteUntilTPlus30DaysThenLosesAll() async throws {
        let world = try await TestWorld()
        try await Self.newCase(world, "00001414", account: "OTHER")   // another account, open
        try await Self.newCase(world, "00001415", account: "ACME")    // closed at T, reopened in time
        try await Self.newCase(world, "00001416", account: "ACME")    // closed at T, on legal hold
        try await world.withServer { client in
            let target = [try await Self.attach(client, "00001413", token: world.customer, size: 3000),
                          try await Self.attach(client, "00001413", token: world.customer, size: 5000)]
            let unfinished = try await client.createUpload(world, length: 100)
            _ = try await client.patch(unfinished, token: world.customer, offset: 0, bytes: testBytes(40))
            let other = try await Self.attach(client, "00001414", token: world.otherCustomer, size: 700)
            let reopened = try await Self.attach(client, "00001415", token: world.customer, size: 800)
            let held = try await Self.attach(client, "00001416", token: world.customer, size: 900)

            // T: three cases close; one is reopened ten days later, one is put on hold.
            for number in ["00001413", "00001415", "00001416"] {
                let closed = try await Self.post(client, "/api/v1/cases/\(number)/close", token: world.customer,
                                                 #"{"subStatus": "Resolved", "comment": "fixed by patch 7"}"#)
                #expect(closed.status == .ok)
            }
            #expect(try await Self.post(client, "/api/v1/cases/00001416/hold", token: world.admin).status == .ok)
            world.clock.advance(by: 10 * Self.day)
            #expect(try await Self.post(client, "/api/v1/cases/00001415/reopen", token: world.customer).status == .ok)

            let purge = RetentionPurge(services: world.services)
            world.clock.advance(by: 20 * Self.day - 1)  // T + 30d − 1s
            let early = try await purge.run(asOf: world.clock.now, trigger: .cli)
            #expect(early.itemsPurged == 0 && early.casesPurged == 0)
            #expect(try await world.services.blobs.storedIDs().count == 6)

            world.clock.advance(by: 1)  // T + 30d
            let before = try await blobBytes(world)
            let run = try await purge.run(asOf: world.clock.now, trigger: .cli)
            let after = try await blobBytes(world)
            #expect(run.casesPurged == 1)
            #expect(run.itemsPurged == 3)
            #expect(run.bytesFreed == 3000 + 5000 + 40)
            #expect(before - after == run.bytesFreed)
            #expect(run.casesSkippedForHold == 1 && run.itemsSkippedForHold == 1)
            #expect(Set(try await world.services.blobs.storedIDs()) == [other, reopened, held])

            let items = try await world.services.database.purgeItems(runID: run.id!)
            #expect(items.reduce(0) { $0 + $1.bytes } == run.bytesFreed)
            #expect(Set(items.map(\.uploadID)).isSuperset(of: target))

            // Tombstones: the case still shows what was there.
            let list = try await client.execute(uri: "/api/v1/cases/00001413/attachments", method: .get,
                                                headers: [.authorization: "Bearer \(world.engineer)"])
            let json = try JSONSerialization.jsonObject(with: Data(buffer: list.body)) as? [String: Any]
            let attachments = try #require(json?["attachments"] as? [[String: Any]])
            #expect(attachments.count == 3)
            #expect(attachments.allSatisfy { $0["state"] as? String == "purged" && $0["purgedAt"] != nil })
            #expect(attachments.filter { $0["sha256"] is String }.count == 2)

            let gone = try await DownloadTests.get(client, target[0], token: world.engineer)
            #expect(gone.status == .gone)
            #expect(errorCode(gone) == "purged")
            #expect(String(buffer: gone.body).contains(CaseLifecycle.day(world.clock.now)))

            world.clock.advance(by: 1)  // T + 30d + 1s
            let refused = try await Self.post(client, "/api/v1/cases/00001413/reopen", token: world.customer)
            #expect(refused.status == .conflict)
            #expect(errorCode(refused) == "reopen_window_passed")
            #expect(String(buffer: refused.body).contains("open a new case and resubmit the data"))

            // A second run finds nothing more: the purge is idempotent.
            let again = try await purge.run(asOf: world.clock.now, trigger: .cli)
            #expect(again.itemsPurged == 0)
            let runs = try await client.execute(uri: "/api/v1/purge-runs", method: .get,
                                                headers: [.authorization: "Bearer \(world.admin)"])
            #expect(runs.status == .ok)
            #expect(String(buffer: runs.body).contains("\"bytesFreed\":8040"))
        }
    }

    @Test func releasingAHoldLetsTheNextRunPurge() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            _ = try await Self.attach(client, "00001413", token: world.customer, size: 100)
            _ = try await Self.post(client, "/api/v1/cases/00001413/close", token: world.engineer, #"{"subStatus": "Redirected"}"#)
            _ = try await Self.post(client, "/api/v1/cases/00001413/hold", token: world.admin)
            world.clock.advance(by: 60 * Self.day)
            let purge = RetentionPurge(services: world.services)
            #expect(try await purge.run(asOf: world.clock.now, trigger: .cli).itemsPurged == 0)
            let released = try await client.execute(uri: "/api/v1/cases/00001413/hold", method: .delete,
                                                    headers: [.authorization: "Bearer \(world.admin)"])
            #expect(released.status == .ok)
            #expect(try await purge.run(asOf: world.clock.now, trigger: .cli).itemsPurged == 1)
            let history = try await world.services.database.caseHistory("00001413").map(\.kind)
            #expect(history == [.closed, .hold, .release, .purged])
        }
    }

    @Test func theRetentionPeriodComesFromTheSharedSettings() async throws {
        let world = try await TestWorld()
        try await world.services.database.setSetting("retention-days", "5")
        try await world.withServer { client in
            _ = try await Self.attach(client, "00001413", token: world.customer, size: 100)
            _ = try await Self.post(client, "/api/v1/cases/00001413/close", token: world.customer, #"{"subStatus": "Cancelled"}"#)
            world.clock.advance(by: 5 * Self.day)
            let plan = try await RetentionPurge(services: world.services).plan(asOf: world.clock.now)
            #expect(plan.settings.retentionDays == 5)
            #expect(plan.due.map(\.supportCase.number) == ["00001413"])
            #expect(plan.due.first?.bytes == 100)
            #expect(try await world.services.blobs.storedIDs().count == 1, "a plan changes nothing")
        }
    }
}

@Suite struct CaseLifecycleTests {
    @Test func closingFollowsTheHandbook() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            let redirected = try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.customer,
                                                           #"{"subStatus": "Redirected"}"#)
            #expect(redirected.status == .forbidden)
            let invalid = try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.engineer,
                                                        #"{"subStatus": "Investigation"}"#)
            #expect(invalid.status == .badRequest)
            #expect(errorCode(invalid) == "invalid_sub_status")
            let hidden = try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.otherCustomer,
                                                       #"{"subStatus": "Resolved"}"#)
            #expect(hidden.status == .notFound)

            let upload = try await client.createUpload(world, length: 10)
            let closed = try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.customer,
                                                       #"{"subStatus": "Resolved", "comment": "works now"}"#)
            #expect(closed.status == .ok)
            #expect(String(buffer: closed.body).contains("\"status\":\"Closed\""))

            // Uploads stop: 403 case_closed (not 409, which tus clients would retry forever).
            let create = try await client.execute(
                uri: "/api/v1/cases/00001413/uploads", method: .post,
                headers: .tus(world.customer, [.uploadLength: "1", .uploadMetadata: metadata()]))
            #expect(create.status == .forbidden)
            #expect(errorCode(create) == "case_closed")
            #expect(String(buffer: create.body).contains("Reopen"))
            let patch = try await client.patch(upload, token: world.customer, offset: 0, bytes: [1])
            #expect(patch.status == .forbidden)
            #expect(errorCode(patch) == "case_closed")

            let reopened = try await RetentionTests.post(client, "/api/v1/cases/00001413/reopen", token: world.customer)
            #expect(reopened.status == .ok)
            #expect(String(buffer: reopened.body).contains("\"subStatus\":\"Customer Responded\""))
            #expect(try await client.patch(upload, token: world.customer, offset: 0, bytes: testBytes(10)).status == .noContent)
        }
    }

    @Test func staffMoveStatusesAndEveryTransitionIsRecorded() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in
            func patchStatus(_ token: String, _ body: String) async throws -> TestResponse {
                try await client.execute(uri: "/api/v1/cases/00001413", method: .patch,
                                         headers: RetentionTests.json(token), body: ByteBuffer(string: body))
            }
            #expect(try await patchStatus(world.customer, #"{"status": "Awaiting Info", "subStatus": "Info required from the customer"}"#).status == .forbidden)
            #expect(try await patchStatus(world.engineer, #"{"status": "Awaiting Info", "subStatus": "Replied"}"#).status == .badRequest)
            #expect(try await patchStatus(world.engineer, #"{"status": "Closed", "subStatus": "Resolved"}"#).status == .badRequest)
            #expect(try await patchStatus(world.engineer, #"{"status": "Nonsense", "subStatus": "x"}"#).status == .badRequest)
            #expect(try await patchStatus(world.engineer, #"{"status": "Solution Proposed", "subStatus": "Fixed-Software Provided"}"#).status == .ok)
            _ = try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.engineer, #"{"subStatus": "Logged for Future Fix"}"#)
            #expect(try await RetentionTests.post(client, "/api/v1/cases/00001413/close", token: world.engineer,
                                                  #"{"subStatus": "Resolved"}"#).status == .conflict)
            #expect(try await RetentionTests.post(client, "/api/v1/cases/00001413/hold", token: world.engineer).status == .forbidden)
            _ = try await RetentionTests.post(client, "/api/v1/cases/00001413/reopen", token: world.engineer)

            let history = try await client.execute(uri: "/api/v1/cases/00001413/history", method: .get,
                                                   headers: [.authorization: "Bearer \(world.customer)"])
            let json = try JSONSerialization.jsonObject(with: Data(buffer: history.body)) as? [String: Any]
            let events = try #require(json?["events"] as? [[String: Any]])
            #expect(events.map { $0["kind"] as? String } == ["status", "closed", "reopened"])
            #expect(events.map { $0["actor"] as? String } == ["erin", "erin", "erin"])
            #expect(events.map { $0["subStatus"] as? String } == ["Fixed-Software Provided", "Logged for Future Fix", "Investigation"])
        }
    }
}
