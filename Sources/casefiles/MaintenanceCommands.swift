import ArgumentParser
import Foundation
import Logging
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesOutbound
import CaseFilesPostgres
import CaseFilesServer
import CaseFilesStorage

/// The webhook settings (`webhook`, `webhook-secret-file`, `webhook-retry-base` in `ServeSettings`) made into the
/// delivery service.
enum WebhookOptions {
    /// The delivery service, or nil when no webhook is configured (events then wait in the outbox).
    static func delivery(_ settings: AppConfiguration, outbox: any EventOutbox, logger: Logger) throws -> WebhookDelivery? {
        guard !settings.webhooks.isEmpty else { return nil }
        let secretPath = settings.webhookSecretFile ?? settings.storage.appendingPathComponent(WebhookSecretFile.name).path
        let secret = try WebhookSecretFile.load(path: secretPath)
        for problem in PrivateStorage.check([secretPath]) {
            logger.warning("webhook secret open to other users: \(problem)")
        }
        let configuration = WebhookConfiguration(urls: settings.webhooks, secret: secret, retryBase: settings.webhookRetryBase)
        return WebhookDelivery(outbox: outbox, configuration: configuration, logger: logger)
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the storage root into DEST while the service runs (a consistent copy; private, 0700/0600).")
    @OptionGroup var storage: StorageOptions
    @Argument(help: "A new or empty folder for the backup.") var destination: String

    func run() async throws {
        // Refused before DEST is made: this copies a SQLite file (README, "Metadata on PostgreSQL").
        if storage.metadataIsOnPostgres { throw PostgresBackupUnsupported() }
        let services = try await storage.openServices()
        let report = try await StorageBackup.backup(services: services, storage: storage.url,
                                                    to: URL(fileURLWithPath: destination))
        print("backup \(destination): \(report.attachments) attachments, \(report.unfinished) unfinished uploads; "
              + "\(report.linked) blobs hard-linked, \(report.copied) copied (\(report.bytesCopied) bytes); "
              + "database integrity \(report.integrity)")
        for id in report.goneUnfinished { print("note: upload \(id) was terminated during the backup; it is terminated in the copy") }
        for id in report.missingAttachments { print("error: attachment \(id) has no blob in the storage root; run `casefiles verify`") }
        if !report.missingAttachments.isEmpty || report.integrity != "ok" { throw ExitCode(1) }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup made by `casefiles backup` into a new or empty storage root (--storage).")
    @OptionGroup var storage: StorageOptions
    @Argument(help: "The backup folder.") var backup: String

    func run() async throws {
        // A backup holds a SQLite file, which a PostgreSQL database is not restored from.
        if storage.metadataIsOnPostgres { throw PostgresBackupUnsupported() }
        let workers = WorkerThreads()
        let report = try await StorageBackup.restore(from: URL(fileURLWithPath: backup), to: storage.url,
                                                     threads: workers.storage, now: Date())
        print("restored \(backup) into \(storage.url.path): \(report.attachments) attachments, "
              + "\(report.unfinished) unfinished uploads; database integrity \(report.integrity)")
        for id in report.missingAttachments { print("error: the backup lacks the blob of attachment \(id)") }
        if !report.missingAttachments.isEmpty || report.integrity != "ok" { throw ExitCode(1) }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-hash every verified attachment against its SHA-256 and report missing or changed files (never fixes).",
        discussion: "Exits 1 if any attachment is missing or differs.")
    @OptionGroup var storage: StorageOptions
    @Option(help: "Read at most this many MB (10^6 bytes) a second, to run beside the service (default: no limit).")
    var rate: Double?

    func run() async throws {
        if let rate, rate <= 0 { throw ValidationError("--rate must be a positive number of MB/s") }
        let services = try await storage.openServices()
        let report = try await BlobVerification.run(services: services, bytesPerSecond: rate.map { $0 * 1_000_000 })
        for problem in report.problems { print("PROBLEM \(problem)") }
        print("verified \(report.checked) attachments (\(report.bytes) bytes): \(report.problems.count) problem(s)")
        if !report.problems.isEmpty { throw ExitCode(1) }
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The events for the case system (webhooks) and their delivery.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List events, newest first: id, type, state, attempts, created, next attempt, last error.")
        @OptionGroup var storage: StorageOptions
        @Option(help: "Only events in this state: pending, delivered or dead.") var state: String?
        @Option(help: "At most this many.") var limit = 100

        func run() async throws {
            var wanted: OutboundEvent.State?
            if let state {
                guard let parsed = OutboundEvent.State(rawValue: state) else {
                    throw ValidationError("--state must be one of: pending, delivered, dead")
                }
                wanted = parsed
            }
            let services = try await storage.openServices()
            for event in try await services.database.events(state: wanted, limit: limit) {
                print([event.id, event.type.rawValue, event.state.rawValue, String(event.attempts),
                       event.createdAt.formatted(.iso8601),
                       event.state == .pending ? event.nextAttemptAt.formatted(.iso8601) : "-",
                       event.lastError ?? "-"].joined(separator: "\t"))
            }
        }
    }
}
