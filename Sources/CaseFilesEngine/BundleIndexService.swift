import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import ServiceLifecycle
import CaseFilesBundles
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// Indexes archive attachments in the background (issue #21): it polls for verified attachments without a
/// finished index, oldest first, and builds each index in one pass over the blob on its own thread at nice 10
/// (`ThreadPriority.bulkWork`), so uploads, downloads and request routing go first. An index interrupted by shutdown
/// stays `pending` and is built again at the next start. A failed pass is logged and retried, never thrown.
public struct BundleIndexService: Service {
    package let services: AppServices
    package let limits: BundleLimits
    package let interval: Duration
    package let logger: Logger

    public init(services: AppServices, limits: BundleLimits, interval: Duration, logger: Logger) {
        self.services = services
        self.limits = limits
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        // Started from an event loop, the thread would inherit the loops' raised priority until its first index.
        try? await thread.runIfActive { BulkWork.lowerPriority() }
        let stopping = NIOLockedValueBox(false)
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                var built = false
                do {
                    built = try await indexNext(on: thread, stopping: stopping)
                } catch is CancellationError {
                    break
                } catch {
                    logger.error("bundle index pass failed; will retry", metadata: ["error": "\(error)"])
                }
                if !built {
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
                }
            }
        } onGracefulShutdown: {
            stopping.withLockedValue { $0 = true }
        }
        try? await thread.shutdownGracefully()
    }

    /// Indexes the next attachment waiting for it; false when none is waiting.
    @discardableResult
    public func indexNext(on thread: NIOThreadPool, stopping: NIOLockedValueBox<Bool> = .init(false)) async throws -> Bool {
        guard let upload = try await services.database.nextAttachmentToIndex() else { return false }
        let limits = self.limits
        let now = services.now()
        let result: BundleIndexer.Result
        do {
            // Opened inside: a blob gone missing (removed by hand, a bad restore) is reported, not retried forever
            // (it would hold up every attachment after it, which are taken oldest first).
            let reader = try await services.blobs.openForReading(id: upload.id)
            result = try await thread.runToCompletion {
                BulkWork.lowerPriority()
                return try BundleIndexer.index(blob: reader, size: upload.offset, attachmentID: upload.id,
                                               filename: upload.filename, limits: limits, now: now,
                                               shouldStop: { stopping.withLockedValue { $0 } })
            }
        } catch let error as StorageError {
            // The blob cannot be read: say so rather than retry it forever.
            result = BundleIndexer.Result(
                index: BundleIndex(attachmentID: upload.id, state: .unreadable,
                                   reason: "the attachment's file could not be read (\(error))", updatedAt: now),
                entries: [], checkpoints: [])
        }
        let saved = try await services.database.saveBundleIndex(result.index, entries: result.entries,
                                                                 checkpoints: result.checkpoints)
        logger.info("bundle indexed", metadata: [
            "attachment": "\(upload.id)", "state": "\(result.index.state.rawValue)",
            "entries": "\(result.entries.count)", "truncated": "\(result.index.truncated)", "saved": "\(saved)",
        ])
        return true
    }
}
