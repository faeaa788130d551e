import Foundation
import Logging
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// The retention policy (30 days by default, `RetentionSettings`): all attached data of a case closed for the retention period is
/// purged (blobs removed, rows kept as tombstones), except cases on legal hold. Every run and item is
/// written to the audit log (`purgeRun`, `purgeItem`), which survives the purge itself.
///
/// Crash-safe and idempotent: each item is one transaction (tombstone + audit row) followed by the blob's
/// removal; a run killed anywhere leaves at worst orphan blobs, which the next run sweeps, and a
/// `running` audit row, which the next run marks `interrupted` with its recorded totals.
public struct RetentionPurge: Sendable {
    package let services: AppServices

    public init(services: AppServices) {
        self.services = services
    }

    public struct PlannedCase: Sendable {
        public var supportCase: SupportCase
        public var uploads: [Upload]
        public var bytes: Int64 { uploads.reduce(0) { $0 + $1.offset } }
    }

    public struct Plan: Sendable {
        public var asOf: Date
        public var settings: RetentionSettings
        public var due: [PlannedCase]
        public var held: [PlannedCase]
    }

    /// What a run at `asOf` would purge; changes nothing (the dry run). Which cases are due or held is
    /// `PurgeEligibility.of`'s decision, the same for the run, the dry run and the candidates' SQL.
    public func plan(asOf: Date) async throws -> Plan {
        let settings = try await services.database.retentionSettings()
        let candidates = try await services.database.casesDueForPurge(asOf: asOf, settings: settings)
            .map { PlannedCase(supportCase: $0.0, uploads: $0.1) }
        func eligibility(_ planned: PlannedCase) -> PurgeEligibility {
            PurgeEligibility.of(planned.supportCase, asOf: asOf, settings: settings)
        }
        return Plan(asOf: asOf, settings: settings,
                    due: candidates.filter { eligibility($0) == .due },
                    held: candidates.filter { eligibility($0) == .held })
    }

    /// Purges everything due at `asOf` and returns the finished audit record.
    public func run(asOf: Date, trigger: PurgeRun.Trigger) async throws -> PurgeRun {
        let database = services.database
        // A backup is copying the blobs its snapshot names: removal waits for its lease (`BackupLeaseStore`).
        if let lease = try await database.backupLease(at: services.now()) { throw BackupInProgress(until: lease.expiresAt) }
        let started = ContinuousClock.now
        defer { services.metrics.purgeDuration.record(duration: ContinuousClock.now - started) }
        try await database.closeInterruptedPurgeRuns(at: services.now())
        let plan = try await plan(asOf: asOf)
        let policy = "\(plan.settings.retentionDays)-day retention after closure"
        var run = try await database.insertPurgeRun(PurgeRun(
            id: nil, startedAt: services.now(), finishedAt: nil, asOf: asOf, retentionDays: plan.settings.retentionDays,
            trigger: trigger, state: .running, casesPurged: 0, itemsPurged: 0, bytesFreed: 0,
            casesSkippedForHold: plan.held.count, itemsSkippedForHold: plan.held.reduce(0) { $0 + $1.uploads.count },
            errors: nil))
        var errors: [String] = []
        var pausedForBackup = false
        cases: for planned in plan.due {
            for upload in planned.uploads {
                let purged: Bool
                do {
                    purged = try await database.purgeUpload(upload, runID: run.id!, at: services.now())
                } catch let paused as BackupInProgress {
                    // A backup took its lease after this run began: stop here; the next run goes on.
                    errors.append("stopped: \(paused)")
                    pausedForBackup = true
                    break cases
                }
                guard purged else { continue }
                Failpoint.hit("purge.after-tombstone")
                do {
                    try await services.blobs.remove(id: upload.id)
                } catch {
                    errors.append("\(upload.id): \(error)")  // the row is a tombstone; the sweep retries the file
                }
                run.itemsPurged += 1
                run.bytesFreed += upload.offset
                services.metrics.purgedItems.increment()
                services.metrics.purgedBytes.increment(by: upload.offset)
            }
            try await database.markCasePurged(planned.supportCase, policy: policy, at: services.now())
            run.casesPurged += 1
        }
        if !pausedForBackup {
            do {
                try await services.sweepOrphanBlobs(unknownOlderThan: 600)
            } catch {
                errors.append("orphan sweep: \(error)")
            }
        }
        run.state = .finished
        run.finishedAt = services.now()
        run.errors = errors.isEmpty ? nil : errors.joined(separator: "\n")
        try await database.updatePurgeRun(run)
        return run
    }
}

/// Runs the purge on a schedule inside `serve`; a failed run is logged and retried next time, never
/// thrown (a throwing service stops the whole application).
public struct RetentionPurgeService: Service {
    package let purge: RetentionPurge
    package let services: AppServices
    package let interval: Duration
    package let logger: Logger

    public init(services: AppServices, interval: Duration, logger: Logger) {
        self.purge = RetentionPurge(services: services)
        self.services = services
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let run = try await purge.run(asOf: services.now(), trigger: .schedule)
                if run.itemsPurged > 0 {
                    logger.notice("retention purge", metadata: [
                        "cases": "\(run.casesPurged)", "items": "\(run.itemsPurged)", "bytes": "\(run.bytesFreed)"])
                }
            } catch is CancellationError {
                // Shutdown: a purge stopped between items finishes on the next run.
            } catch let paused as BackupInProgress {
                logger.notice("retention purge waits for a backup; will retry", metadata: ["reason": "\(paused)"])
            } catch {
                logger.error("retention purge failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
