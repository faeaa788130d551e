/// What the nodes of one deployment agree on through the metadata store they share (issue #22): who writes each
/// upload, and which node runs the jobs that must run once (the retention purge, the upload expiry sweep).
///
/// One process on SQLite is the whole deployment (`SingleNode`): its in-process `UploadWriterLocks` is already
/// the only writer, and its jobs already run once. On PostgreSQL several `serve` processes share the database and
/// the object store, and `PostgresNodeCoordination` (CaseFilesPostgres) does it with advisory locks and
/// LISTEN/NOTIFY (ARCHITECTURE.md, "Several nodes").
public protocol NodeCoordination: Sendable {
    /// Runs `body` while this request is the only writer of `uploadID` in the whole deployment: first asks a
    /// request writing it on another node to stop (newest wins, as `UploadWriterLocks` does within one node),
    /// then waits until that request has let go, or its node has died, and holds the right until `body` returns.
    /// Called by the holder of the node's own writer lock, so at most one request per node waits here.
    /// - Parameters:
    ///   - onStop: called when a request on another node wants the upload; `body` should then end soon, keeping
    ///     what it committed.
    /// - Throws: `CancellationError` if the caller is cancelled while waiting; the store's errors; `body`'s.
    func asOnlyWriter<T: Sendable>(
        of uploadID: String, onStop: @escaping @Sendable () -> Void, _ body: @Sendable () async throws -> T
    ) async throws -> T

    /// Whether this node is the one that runs the deployment's once-only jobs now. Asked before each pass; a
    /// node that dies loses the role, and the next node that asks takes it.
    func runsOnceOnlyJobs() async -> Bool
}

/// One node: nothing to coordinate with.
public struct SingleNode: NodeCoordination {
    public init() {}

    public func asOnlyWriter<T: Sendable>(
        of uploadID: String, onStop: @escaping @Sendable () -> Void, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        try await body()
    }

    public func runsOnceOnlyJobs() async -> Bool { true }
}
