import Foundation
import Logging
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// Reclaims abandoned uploads (tus expiration): unfinished uploads without progress for the upload
/// expiry become `expired` and their blobs are removed; expired signed-link rows are deleted. Runs with `serve` and stops with it; a failed
/// pass is logged and retried on the next tick, never thrown (a throwing service stops the whole app).
public struct UploadExpiryService: Service {
    package let services: AppServices
    package let interval: Duration
    package let logger: Logger

    public init(services: AppServices, interval: Duration, logger: Logger) {
        self.services = services
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // Once per deployment: several nodes on one database take turns through `NodeCoordination`.
            if await services.coordination.runsOnceOnlyJobs() { await sweepLogged() }
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: interval)
            }
        }
    }

    private func sweepLogged() async {
        do {
            let reclaimed = try await sweep()
            if !reclaimed.isEmpty { logger.info("expired abandoned uploads", metadata: ["count": "\(reclaimed.count)"]) }
        } catch is CancellationError {
            // Shutdown: nothing failed.
        } catch {
            logger.error("upload expiry pass failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    /// One pass, using the injected clock; returns the ids it expired (`Upload.isExpired` decides). The same
    /// pass deletes the signed-link rows no longer usable (`MetadataStore.pruneExpiredLinks`), so issuing links
    /// cannot grow the database without bound.
    @discardableResult
    public func sweep() async throws -> [String] {
        let now = services.now()
        let ids = try await services.database.expireUploads(at: now, expiry: services.limits.uploadExpiry)
        services.metrics.uploadsExpired.increment(by: ids.count)
        for id in ids { try await services.blobs.remove(id: id) }
        let pruned = try await services.database.pruneExpiredLinks(at: now, maxLifetime: services.security.maxLinkLifetime)
        if pruned > 0 { logger.info("pruned expired download links", metadata: ["count": "\(pruned)"]) }
        return ids
    }
}
