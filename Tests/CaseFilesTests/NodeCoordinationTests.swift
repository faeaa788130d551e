@testable import CaseFilesDatabase
@testable import CaseFilesPostgres
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import Testing

/// Two nodes sharing one PostgreSQL database (`PostgresNodeCoordination`, issue #22), as two coordinators in one
/// process: each has its own connections, so to PostgreSQL they are two nodes. Skipped on SQLite, where a
/// deployment is one process (`SingleNode`).
@Suite(.enabled(if: TestDatabase.postgres != nil, "needs CASEFILES_TEST_DATABASE (Scripts/postgres start)"))
struct NodeCoordinationTests {
    /// Steps in the order they happened, across the two nodes' tasks.
    final class Journal: Sendable {
        private let steps = NIOLockedValueBox<[String]>([])
        func add(_ step: String) { steps.withLockedValue { $0.append(step) } }
        var all: [String] { steps.withLockedValue { $0 } }
    }

    static func twoNodes() async throws -> (PostgresNodeCoordination, PostgresNodeCoordination, PostgresMetadataStore) {
        let store = try #require(try await TestDatabase.freshPostgres())
        return (PostgresNodeCoordination(location: store.location), PostgresNodeCoordination(location: store.location), store)
    }

    /// Newest wins across nodes: B's request asks A's writer to stop (NOTIFY), A's body ends, and only then
    /// does B's body run.
    @Test func aRequestOnAnotherNodeStopsTheWriterAndTakesOver() async throws {
        let (a, b, store) = try await Self.twoNodes()
        let journal = Journal()
        let (stopped, stop) = AsyncStream<Void>.makeStream()
        let holding = Task {
            try await a.asOnlyWriter(of: "upload-1", onStop: { journal.add("A asked to stop"); stop.yield() }) {
                journal.add("A writes")
                for await _ in stopped { break }
                journal.add("A lets go")
            }
        }
        while !journal.all.contains("A writes") { try await Task.sleep(for: .milliseconds(10)) }
        try await b.asOnlyWriter(of: "upload-1", onStop: {}) { journal.add("B writes") }
        try await holding.value
        #expect(journal.all == ["A writes", "A asked to stop", "A lets go", "B writes"])
        await a.shutdown(); await b.shutdown(); await store.shutdown()
    }

    /// Different uploads do not wait for each other, on two nodes either.
    @Test func differentUploadsDoNotContend() async throws {
        let (a, b, store) = try await Self.twoNodes()
        let journal = Journal()
        try await a.asOnlyWriter(of: "upload-1", onStop: { journal.add("A asked to stop") }) {
            try await b.asOnlyWriter(of: "upload-2", onStop: {}) { journal.add("B writes upload-2") }
        }
        #expect(journal.all == ["B writes upload-2"])
        await a.shutdown(); await b.shutdown(); await store.shutdown()
    }

    /// A node that dies (its connections end, as on SIGKILL) lets go of its upload: the other node's waiting
    /// request takes over without the dead node's help.
    @Test func aDeadNodesUploadIsTakenOver() async throws {
        let (a, b, store) = try await Self.twoNodes()
        let journal = Journal()
        let holding = Task {
            // A never stops on its own: only the end of its session frees the upload.
            try await a.asOnlyWriter(of: "upload-1", onStop: { journal.add("A asked to stop") }) {
                journal.add("A writes")
                try await Task.sleep(for: .seconds(3600))
            }
        }
        while !journal.all.contains("A writes") { try await Task.sleep(for: .milliseconds(10)) }
        let taking = Task { try await b.asOnlyWriter(of: "upload-1", onStop: {}) { journal.add("B writes") } }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!journal.all.contains("B writes"))
        // What the server does when a node's process is killed: its sessions end, and with them their locks.
        let killed = try await Self.terminateSessionsHoldingAdvisoryLocks(store)
        #expect(killed >= 1)
        try await taking.value
        #expect(journal.all.contains("B writes"))
        holding.cancel()
        _ = await holding.result
        await a.shutdown(); await b.shutdown(); await store.shutdown()
    }

    /// The once-only jobs run on one node; when it goes, the next node that asks takes them.
    @Test func onceOnlyJobsRunOnOneNodeAtATime() async throws {
        let (a, b, store) = try await Self.twoNodes()
        #expect(await a.runsOnceOnlyJobs() == true)
        #expect(await b.runsOnceOnlyJobs() == false)
        #expect(await a.runsOnceOnlyJobs() == true)
        await a.shutdown()
        #expect(await b.runsOnceOnlyJobs() == true)
        await b.shutdown(); await store.shutdown()
    }

    static func terminateSessionsHoldingAdvisoryLocks(_ store: PostgresMetadataStore) async throws -> Int {
        let location = store.location
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: location.host, port: location.port, username: location.username,
                                 password: location.password, database: location.database, tls: .disable),
            id: 9, logger: Logger(label: "test"))
        defer { Task { try? await connection.close() } }
        let rows = try await connection.query("""
            SELECT count(pg_terminate_backend(pid))::int FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """, logger: Logger(label: "test"))
        var count = 0
        for try await value in rows.decode(Int.self) { count = value }
        return count
    }
}
