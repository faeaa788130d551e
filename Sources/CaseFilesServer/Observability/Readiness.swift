import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import ServiceLifecycle
import UnixSignals
import CaseFilesEngine

/// `GET /readyz`: whether this instance should be sent traffic, unlike `/healthz` (the process answers).
/// Ready means the database takes a write transaction, the storage file system has more free space than
/// the reserve (`--min-free-space`), and no SIGTERM has arrived: from that moment it is not ready, while
/// requests in flight finish (a load balancer stops sending new ones). Answered on the main listener and on
/// `--metrics-listen`, which stays up while the main listener drains.
public final class Readiness: Sendable {
    private let shuttingDown = NIOLockedValueBox(false)
    let services: AppServices

    init(services: AppServices) {
        self.services = services
    }

    func markShuttingDown() { shuttingDown.withLockedValue { $0 = true } }

    /// The failed checks, each with what was found (empty: ready).
    func failedChecks() async -> [String] {
        var failed: [String] = []
        if shuttingDown.withLockedValue({ $0 }) { failed.append("shutdown: the server is shutting down") }
        do {
            try await services.database.probeWrite()
        } catch {
            failed.append("database: a write transaction failed (\(error))")
        }
        do {
            // nil: the store has no free-space figure (an object store), nothing to fail on.
            let available = try await services.blobs.availableBytes()
            let reserve = services.limits.minFreeBytes
            if let available, available <= reserve {
                failed.append("free_space: \(available) bytes free, not above the reserve of \(reserve) (--min-free-space)")
            }
        } catch {
            failed.append("free_space: the storage file system could not be measured (\(error))")
        }
        return failed
    }

    func response(includeBody: Bool) async -> Response {
        let failed = await failedChecks()
        guard failed.isEmpty else { return APIError.notReady(failed).response(includeBody: includeBody) }
        return Response(status: .ok, headers: [.contentType: APIError.contentType],
                        body: includeBody ? .init(byteBuffer: ByteBuffer(string: #"{"status":"ready"}"#)) : .init())
    }

    /// Marks the instance not ready as soon as SIGTERM or SIGINT arrives. ServiceGroup shuts its services down
    /// one at a time, the HTTP server first, so a service told by ServiceGroup would hear only once the
    /// requests in flight had finished; this one watches the signals itself.
    struct SignalWatcher: Service {
        let readiness: Readiness

        func run() async throws {
            let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
            try? await cancelWhenGracefulShutdown {
                for await _ in signals {
                    readiness.markShuttingDown()
                    break
                }
            }
            readiness.markShuttingDown()
            // A service that returns before the group shuts down stops the whole group: wait for our turn.
            try? await gracefulShutdown()
        }
    }
}
