import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import CaseFilesDatabase

/// `NodeCoordination` for the nodes sharing one PostgreSQL database (issue #22; ARCHITECTURE.md, "Several nodes").
///
/// - **One writer per upload**: a session-level advisory lock on the upload's id (`hashtextextended`, 64 bits; two
///   ids that collide only take turns), held by a connection of this coordination's own pool for the writer's
///   whole request. PostgreSQL drops a session's advisory locks when its connection ends
///   (postgresql.org/docs/15/explicit-locking.html §13.3.5), so a node that dies (SIGKILL, power) lets go as
///   soon as the server sees its connections close, and the retrying client's next request takes over.
/// - **Newest wins**: a request that finds the lock held sends `NOTIFY casefiles_writer, '<upload> <node>'`;
///   every node LISTENs, and the one writing that upload stops its writer, which commits what it verified and
///   lets go. The waiter asks again each second (a holder that took the lock just after a notification missed it).
/// - **Waiting** polls `pg_try_advisory_lock` every 20 ms rather than blocking in `pg_advisory_lock`: a blocked
///   query cannot be cancelled when the waiting request is itself superseded or cut, and would keep its
///   connection until the holder finished.
/// - **Once-only jobs**: `pg_try_advisory_lock` on a fixed key, held by one connection of the node that took it
///   for as long as that connection lives.
///
/// Its own pool (`maxWriters` connections), not the metadata store's: leases held for whole uploads must not
/// starve the queries those uploads make. A writer beyond `maxWriters` waits for a connection (cancellable).
/// The lock is what keeps two nodes from writing one blob at once; the metadata store's `offset = expected`
/// guard still decides which append commits if a lock is lost with its connection mid-request.
public final class PostgresNodeCoordination: NodeCoordination {
    /// This process's name in notifications (it ignores its own) and, as `application_name`, in
    /// `pg_stat_activity` beside the advisory locks it holds: `casefiles HOST:PID`, so an operator (and the
    /// failover test) can see which node writes which upload.
    public let nodeID: String
    private let client: PostgresClient
    private let location: PostgresLocation
    private let logger: Logger
    /// The writer to stop, per upload written here.
    private let writers = NIOLockedValueBox<[String: @Sendable () -> Void]>([:])
    private let seat: OnceOnlySeat
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

    static let channel = "casefiles_writer"
    /// The once-only jobs' lock key (`hashtextextended` space is disjoint from nothing, hence a fixed odd value).
    static let onceOnlyKey: Int64 = 0x4361_7365_4669_6c65   // "CaseFile"
    /// How often a waiting writer asks again whether the upload is free, and re-sends its notification.
    static let pollInterval: Duration = .milliseconds(20)
    static let renotifyEvery = 50

    /// Starts the pool and the listener; `shutdown()` stops them.
    public init(location: PostgresLocation, maxWriters: Int = 64, logger: Logger = Logger(label: "casefiles.cluster")) {
        let nodeID = "casefiles \(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):"
            + UUID().uuidString.prefix(8)
        self.nodeID = nodeID
        self.location = location
        self.logger = logger
        var configuration = location.clientConfiguration
        configuration.options.additionalStartupParameters = [("application_name", nodeID)]
        configuration.options.maximumConnections = maxWriters
        configuration.options.minimumConnections = 0
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        seat = OnceOnlySeat(location: location, nodeID: nodeID, logger: logger)
        let client = client
        let pool = Task { await client.run() }
        let listener = Task { [weak self] in
            guard let self else { return }
            await self.listen()
        }
        tasks.withLockedValue { $0 = [pool, listener] }
    }

    public func shutdown() async {
        let running = tasks.withLockedValue { $0 }
        running.forEach { $0.cancel() }
        for task in running { await task.value }
        await seat.leave()
    }

    public func asOnlyWriter<T: Sendable>(
        of uploadID: String, onStop: @escaping @Sendable () -> Void, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        // A request stopped while it waits for a connection gets the pool's `requestCancelled`: mapped to the
        // `CancellationError` the upload engine answers with the stop's reason, as the store's own calls are.
        try await PostgresMetadataStore.mappingErrors { try await client.withConnection { connection in
            let name = "casefiles.upload:" + uploadID
            var attempts = 0
            while !(try await Self.tryLock(name: name, on: connection, logger: logger)) {
                if attempts % Self.renotifyEvery == 0 {
                    let payload = uploadID + " " + nodeID
                    try await connection.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: logger)
                }
                attempts += 1
                try await Task.sleep(for: Self.pollInterval)
            }
            writers.withLockedValue { $0[uploadID] = onStop }
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            writers.withLockedValue { _ = $0.removeValue(forKey: uploadID) }
            // A connection the server closed (the database restarted) took its lock with it.
            if !connection.isClosed {
                try? await connection.query("SELECT pg_advisory_unlock(hashtextextended(\(name), 0))", logger: logger)
            }
            return try result.get()
        } }
    }

    public func runsOnceOnlyJobs() async -> Bool {
        await seat.isTaken()
    }

    private static func tryLock(name: String, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_lock(hashtextextended(\(name), 0))", logger: logger)
        for try await locked in rows.decode(Bool.self) { return locked }
        return false
    }

    /// Stops this node's writer of each upload another node asks for; reconnects after a second when the
    /// connection breaks.
    private func listen() async {
        while !Task.isCancelled {
            do {
                var configuration = try location.connectionConfiguration()
                configuration.options.additionalStartupParameters = [("application_name", nodeID)]
                let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
                defer { Task { try? await connection.close() } }
                try await connection.listen(on: Self.channel) { notifications in
                    for try await notification in notifications {
                        let parts = notification.payload.split(separator: " ", maxSplits: 1).map(String.init)
                        guard parts.count == 2, parts[1] != nodeID else { continue }
                        writers.withLockedValue { $0[parts[0]] }?()
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("cluster notifications: connection lost; reconnecting", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// The once-only jobs' seat: a connection holding `onceOnlyKey` while this node runs them.
private actor OnceOnlySeat {
    private let location: PostgresLocation
    private let nodeID: String
    private let logger: Logger
    private var connection: PostgresConnection?
    private var taken = false

    init(location: PostgresLocation, nodeID: String, logger: Logger) {
        self.location = location
        self.nodeID = nodeID
        self.logger = logger
    }

    /// True while this node holds the seat; tries to take it when free. A broken connection gives it up.
    func isTaken() async -> Bool {
        do {
            if connection == nil {
                var configuration = try location.connectionConfiguration()
                configuration.options.additionalStartupParameters = [("application_name", nodeID)]
                let fresh = try await PostgresConnection.connect(configuration: configuration, id: 2, logger: logger)
                // Two jobs may ask at once and both connect (the actor is reentrant across the await): keep one.
                if connection == nil {
                    connection = fresh
                    taken = false
                } else {
                    try? await fresh.close()
                }
            }
            guard let connection else { return false }
            let query: PostgresQuery = taken
                ? "SELECT true"
                : "SELECT pg_try_advisory_lock(\(PostgresNodeCoordination.onceOnlyKey))"
            var held = false
            for try await value in try await connection.query(query, logger: logger).decode(Bool.self) { held = value }
            if held && !taken { logger.notice("this node now runs the once-only jobs (retention purge, upload expiry)") }
            taken = held
            return held
        } catch {
            try? await connection?.close()
            connection = nil
            taken = false
            return false
        }
    }

    func leave() async {
        try? await connection?.close()
        connection = nil
        taken = false
    }
}
