import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import CaseFilesClient
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesOutbound
import CaseFilesPostgres
import CaseFilesServer
import CaseFilesStorage
import ServiceLifecycle

@main
struct CaseFilesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casefiles",
        abstract: "Resumable, integrity-checked file transfer for support cases (tus 1.0).",
        subcommands: [Serve.self, Config.self, Users.self, Cases.self, Purge.self, Settings.self, Keys.self,
                      Upload.self, Download.self, Attachments.self, Backup.self, Restore.self, Verify.self,
                      Events.self])

    /// ArgumentParser's own `main`, after the process-wide memory policy (`ProcessMemory`): the server and
    /// the upload client both stream through buffers that would otherwise be fresh pages every request.
    static func main() async {
        ProcessMemory.keepFreedMemory()
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// `--storage PATH` (default `./Storage`, or `CASEFILES_STORAGE`): the database and blobs; `--database URL` (or
/// `CASEFILES_DATABASE`): the metadata on PostgreSQL instead of the storage root's SQLite file, as `serve --database`.
struct StorageOptions: ParsableArguments {
    @Option(help: "Storage root holding the database and blobs (default: $CASEFILES_STORAGE or ./Storage).")
    var storage: String?

    @Option(help: "The metadata on PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE, as serve's (default: $CASEFILES_DATABASE; none: SQLite in the storage root).")
    var database: String?

    var url: URL {
        URL(fileURLWithPath: storage ?? ProcessInfo.processInfo.environment["CASEFILES_STORAGE"] ?? "Storage")
    }

    /// Whether the metadata is on PostgreSQL (`--database` or `CASEFILES_DATABASE` set).
    var metadataIsOnPostgres: Bool {
        !(database ?? ProcessInfo.processInfo.environment["CASEFILES_DATABASE"] ?? "").isEmpty
    }

    /// Opens the storage root (creating it, running migrations, fsyncing the key file: blocking work) on the
    /// command's own storage threads rather than on the command's task. Blobs are where `serve` keeps them when
    /// the environment (or `CASEFILES_CONFIG`) says so: `CASEFILES_BLOB_STORE` and the `CASEFILES_S3_*` settings.
    /// The PostgreSQL store stays open until the process exits.
    func openServices() async throws -> AppServices {
        let url = self.url
        let workers = WorkerThreads()
        let metadata = try await MetadataDatabase.open(database ?? ProcessInfo.processInfo.environment["CASEFILES_DATABASE"])
        let blobStore = try ObjectStoreOptions.fromEnvironment()
        return try await workers.storage.blockingIO {
            try AppServices.open(storage: url, workers: workers, metadata: metadata, blobStore: blobStore)
        }
    }
}

/// The metadata store a `--database` value names: nil (the storage root's SQLite, which `AppServices.open` opens)
/// or a PostgreSQL database, connected and migrated here.
enum MetadataDatabase {
    static func open(_ url: String?) async throws -> PostgresMetadataStore? {
        guard let url, !url.isEmpty else { return nil }
        guard let location = PostgresLocation(url) else {
            throw ValidationError("--database must be \(PostgresLocation.expected)")
        }
        return try await PostgresMetadataStore.connect(location)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP service.",
        discussion: SettingsOptions.help)

    @OptionGroup var options: SettingsOptions

    /// The event loops at `event-loop-nice` (`ThreadPriority`), before anything listens. A refusal (no
    /// RLIMIT_NICE room, no CAP_SYS_NICE) is not fatal: the service works at the process's priority, answers
    /// later under load, and says so once, with what to do. Linux only (elsewhere nice values are per process).
    static func prioritizeEventLoops(nice: Int, logger: Logger) async {
        #if os(Linux)
        guard nice != 0 else { return }
        // A thread inherits the nice value of the thread that starts it: NIO's shared blocking pool
        // (AsyncHTTPClient's and NIOFileSystem's) starts its threads on first use, so it is started here.
        _ = NIOThreadPool.singleton
        if let error = await ThreadPriority.setEventLoops(of: MultiThreadedEventLoopGroup.singleton, nice: nice) {
            logger.warning("event loops left at the process's priority", metadata: [
                "event_loop_nice": "\(nice)", "error": "\(String(cString: strerror(error)))",
                "fix": "allow it with RLIMIT_NICE (systemd LimitNICE=\(nice), as the packaged unit does) or CAP_SYS_NICE, or set event-loop-nice 0 to silence this",
            ])
        } else {
            logger.info("event loops prioritized", metadata: ["event_loop_nice": "\(nice)"])
        }
        #endif
    }

    func run() async throws {
        // Request handlers then run on the event loop that reads their socket instead of hopping to
        // Swift's cooperative pool and back for every body part and response: thread wake-ups are dear
        // on a virtual machine (64 MiB chunk loop: ~5% more MB/s at ~5% less CPU per GiB; one HEAD:
        // 980 -> 870 us of server CPU). Handlers block only for short in-place SQLite reads; hashing,
        // device writes, fsync, file reads and the blob calls that wait on the disk run on thread pools.
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var configuration = try options.resolve().configuration
        configuration.watchesShutdownSignals = true
        // `--blob-store s3://BUCKET`: the S3 blob store and its HTTP client, which outlives the application.
        let objectStoreClient = try ObjectStoreOptions.configure(&configuration)
        // The process's one logging backend, chosen once here: every logger made after this writes structured lines.
        let format = configuration.logFormat
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, format: format) }
        // The worker threads belong to this command: they outlive the application, which may still commit
        // uploads while it shuts down, and stop after it (the hashing lanes first: they hand writes to storage's).
        let workers = WorkerThreads()
        let metadata = try await MetadataDatabase.open(configuration.database)
        // On PostgreSQL this process may be one of several nodes: writers and once-only jobs are coordinated.
        let coordination = metadata.map { PostgresNodeCoordination(location: $0.location) }
        var logger = Logger(label: "casefiles")
        logger.logLevel = configuration.logLevel
        await Self.prioritizeEventLoops(nice: configuration.eventLoopNice, logger: logger)
        let settings = configuration
        do {
            let application = try await buildApplication(configuration, workers: workers, metadata: metadata,
                                                         coordination: coordination, extraServices: { services in
                [try WebhookOptions.delivery(settings, outbox: services.database, logger: logger)].compactMap { $0 }
            })
            try await application.runService()
        } catch {
            await coordination?.shutdown()
            await metadata?.shutdown()
            try? await objectStoreClient?.shutdown()
            throw error
        }
        await coordination?.shutdown()
        await metadata?.shutdown()
        try await objectStoreClient?.shutdown()
        try await workers.bulkWork.shutdown()
        try await workers.storage.shutdown()
    }
}

/// `--config FILE` and every setting of `ServeSettings.all` as a flag: `serve` and `config check` read
/// the configuration through this one path.
struct SettingsOptions: ParsableArguments {
    @Option(help: "YAML configuration file (default: $\(ServeSettings.configEnvironmentVariable); none if unset).")
    var config: String?

    @Argument(parsing: .allUnrecognized, help: "Settings as --name value; see the list below.")
    var settings: [String] = []

    /// The settings' flags, environment variables and defaults, for --help.
    static var help: String {
        let defaults = AppConfiguration()
        return "Each setting is a flag, an environment variable and a key of the --config YAML file, by the same "
            + "name; a flag beats the environment, which beats the file, which beats the default.\n\n"
            + ServeSettings.all.map { setting in
                "  \(setting.flag)\(setting.arity == .flag ? "" : " VALUE")  (\(setting.environmentVariable), default "
                    + "\(setting.show(defaults)))\n      \(setting.help); \(setting.expected)."
            }.joined(separator: "\n")
    }

    /// The effective configuration: the open-files limit raised (the default connection cap follows from
    /// it, with a warning when the cap given exceeds it), then flags over environment over file over defaults.
    func resolve() throws -> EffectiveConfiguration {
        var defaults = AppConfiguration()
        let descriptorLimit = DescriptorLimit.raiseToHardLimit()
        let safeConnections = ConnectionLimits.defaultMaxConnections(descriptorLimit: descriptorLimit)
        defaults.connections.maxConnections = safeConnections
        let effective = try EffectiveConfiguration.resolve(
            arguments: settings, configFile: config, environment: ProcessInfo.processInfo.environment, defaults: defaults)
        let maxConnections = effective.configuration.connections.maxConnections
        if maxConnections > safeConnections {
            FileHandle.standardError.write(Data((
                "warning: max-connections \(maxConnections) can exhaust the open-files limit (\(descriptorLimit)); "
                + "at most \(safeConnections) is safe. Raise the limit (ulimit -n, LimitNOFILE=) or lower the cap.\n").utf8))
        }
        return effective
    }
}

/// `casefiles config check`: the configuration `serve` would run with, validated, with each value's source.
struct Config: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The configuration of serve (file, environment, flags).", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the configuration and print every setting's value and source (flag, env, file or default).",
            discussion: SettingsOptions.help)

        @OptionGroup var options: SettingsOptions

        func run() async throws {
            let effective = try options.resolve()
            try effective.configuration.tls.validate()
            print(effective.report())
        }
    }
}

enum DescriptorLimit {
    /// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard limit, as Go and nginx's
    /// `worker_rlimit_nofile` do: the soft limit of 1,024 that shells hand down is a relic of select(2),
    /// which SwiftNIO does not use. Returns the limit now in force.
    static func raiseToHardLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(RLIMIT_NOFILE_VALUE, &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }

    #if os(Linux)
    private static let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let RLIMIT_NOFILE_VALUE = RLIMIT_NOFILE
    #endif
}

enum DurationOption {
    /// `seconds(text)`, or a validation error naming the flag.
    static func parse(_ text: String, flag: String) throws -> TimeInterval {
        guard let value = seconds(text) else {
            throw ValidationError("\(flag) must be a positive number of seconds or use a suffix: 90s, 30m, 12h, 7d")
        }
        return value
    }

    static func duration(_ text: String, flag: String) throws -> Duration {
        .milliseconds(Int64(try parse(text, flag: flag) * 1000))
    }

    /// Seconds as the largest whole unit: 604800 → "7d", 90 → "90s".
    static func format(_ seconds: TimeInterval) -> String {
        for (unit, scale) in [("d", 86400.0), ("h", 3600.0), ("m", 60.0)] where seconds >= scale && seconds.truncatingRemainder(dividingBy: scale) == 0 {
            return "\(Int(seconds / scale))\(unit)"
        }
        return "\(Int(seconds))s"
    }

    static func format(_ duration: Duration) -> String {
        format(TimeInterval(duration.components.seconds))
    }

    /// "90", "90s", "30m", "12h", "7d" → seconds.
    static func seconds(_ text: String) -> TimeInterval? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last, let scale = units[unit], let value = Double(text.dropLast()), value > 0 {
            return value * scale
        }
        return Double(text).flatMap { $0 > 0 ? $0 : nil }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users and their access tokens.", subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user and print their bearer token (shown once).")
        @OptionGroup var storage: StorageOptions
        @Argument(help: "Unique user name.") var name: String
        @Option(help: "customer, engineer or admin.") var role: String
        @Option(help: "The customer's account (required for customers).") var account: String?

        func run() async throws {
            guard let role = Role(rawValue: role) else {
                throw ValidationError("--role must be customer, engineer or admin")
            }
            if role == .customer && account == nil { throw ValidationError("customers need --account") }
            let token = AccessToken.generate()
            let services = try await storage.openServices()
            _ = try await services.database.createUser(User(
                id: nil, name: name, role: role, account: account, tokenHash: AccessToken.hash(token),
                createdAt: Date(), revokedAt: nil))
            print(token)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Invalidate a user's token.")
        @OptionGroup var storage: StorageOptions
        @Argument var name: String

        func run() async throws {
            guard try await storage.openServices().database.revokeUser(named: name, at: Date()) else {
                throw ValidationError("no active user named \(name)")
            }
            print("revoked \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var storage: StorageOptions

        func run() async throws {
            for user in try await storage.openServices().database.allUsers() {
                let state = user.revokedAt == nil ? "active" : "revoked"
                print([user.name, user.role.rawValue, user.account ?? "-", state].joined(separator: "\t"))
            }
        }
    }
}

struct Cases: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage support cases.",
        subcommands: [Create.self, List.self, Show.self, Status.self, Close.self, Reopen.self, Hold.self, Release.self,
                      DropTokenCommand.self, DropTokensCommand.self, RevokeDropTokenCommand.self])

    static var actor: CaseActor {
        CaseActor(operator: ProcessInfo.processInfo.environment["USER"] ?? "operator")
    }

    static func number(_ text: String) throws -> String {
        guard let number = CaseNumber.normalise(text) else { throw ValidationError("a case number is 1 to 8 digits") }
        return number
    }

    static func describe(_ c: SupportCase) -> String {
        var line = [c.number, c.account, "\(c.status.rawValue) / \(c.subStatus)", c.priority.rawValue, c.subject]
        if c.legalHold { line.append("[legal hold]") }
        if let purgedAt = c.purgedAt { line.append("[purged \(purgedAt.formatted(.iso8601))]") }
        return line.joined(separator: "\t")
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List cases.")
        @OptionGroup var storage: StorageOptions
        func run() async throws {
            for c in try await storage.openServices().database.allCases() { print(Cases.describe(c)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a case, its history and its attachments.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        func run() async throws {
            let database = try await storage.openServices().database
            let number = try Cases.number(number)
            guard let c = try await database.supportCase(number: number) else { throw ValidationError("no case \(number)") }
            print(Cases.describe(c))
            for event in try await database.caseHistory(number) {
                print("  \(event.at.formatted(.iso8601))  \(event.kind.rawValue)  \(event.status.rawValue) / \(event.subStatus)  by \(event.actor)\(event.comment.map { "  — \($0)" } ?? "")")
            }
            for upload in try await database.uploads(caseNumber: number) {
                print("  \(upload.id)  \(upload.state.rawValue)  \(upload.offset)/\(upload.length.map(String.init) ?? "?") bytes  \(upload.sha256 ?? "-")  \(upload.filename)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set an open case's status and sub-status.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        @Argument(help: "Open, Awaiting Info or Solution Proposed.") var status: String
        @Argument(help: "A sub-status of that status, e.g. Investigation.") var subStatus: String
        @Option var comment: String?
        func run() async throws {
            guard let status = CaseStatus(rawValue: status) else {
                throw ValidationError("status must be one of: Open, Awaiting Info, Solution Proposed")
            }
            let c = try await storage.openServices().cases.setStatus(
                try Cases.number(number), to: status, subStatus: subStatus, comment: comment, by: Cases.actor)
            print(Cases.describe(c))
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close a case.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        @Option(help: "Resolved, Cancelled, Logged for Future Fix, Redirected or Customer requested to re-open.")
        var subStatus = "Resolved"
        @Option var comment: String?
        func run() async throws {
            let c = try await storage.openServices().cases.close(
                try Cases.number(number), subStatus: subStatus, comment: comment, by: Cases.actor)
            print(Cases.describe(c))
        }
    }

    struct Reopen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reopen a case closed within the reopen window.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        @Option var comment: String?
        func run() async throws {
            let c = try await storage.openServices().cases.reopen(try Cases.number(number), comment: comment, by: Cases.actor)
            print(Cases.describe(c))
        }
    }

    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a case on legal hold: it is never purged until released.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        func run() async throws { try await Cases.setHold(true, number, storage) }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release a case's legal hold.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        func run() async throws { try await Cases.setHold(false, number, storage) }
    }

    static func setHold(_ held: Bool, _ number: String, _ storage: StorageOptions) async throws {
        print(Cases.describe(try await storage.openServices().cases.setLegalHold(held, try Cases.number(number), by: Cases.actor)))
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open a case (Open / New) and print its number.")
        @OptionGroup var storage: StorageOptions
        @Option(help: "The customer's account.") var account: String
        @Option(help: "One-line description.") var subject: String
        @Option(help: "Case number (1-8 digits; default: the next free one).") var number: String?
        @Option(help: "Prod Down, High, Medium or Low.") var priority = "Medium"
        @Option(help: "Support, Admin or License.") var type = "Support"

        func run() async throws {
            guard let priority = CasePriority(rawValue: priority) else {
                throw ValidationError("--priority must be one of: Prod Down, High, Medium, Low")
            }
            guard let requestType = RequestType(rawValue: type) else {
                throw ValidationError("--type must be one of: Support, Admin, License")
            }
            let services = try await storage.openServices()
            print(try await services.cases.open(account: account, subject: subject, number: number, priority: priority,
                                                requestType: requestType).number)
        }
    }
}

struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Purge the data of cases closed for the retention period (see `casefiles settings`).",
        subcommands: [Run.self, Log.self], defaultSubcommand: Run.self)

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the purge (the default).")
        @OptionGroup var storage: StorageOptions
        @Flag(help: "List what would be purged, per case, and the bytes it would free; change nothing.")
        var dryRun = false
        @Option(help: "Evaluate the policy at this ISO-8601 time instead of now.") var asOf: String?
        @Flag(help: "Allow a future --as-of without --dry-run (purges early).") var force = false

        func run() async throws {
            let now = Date()
            var at = now
            if let asOf {
                guard let parsed = ISO8601DateFormatter().date(from: asOf) else {
                    throw ValidationError("--as-of must be an ISO-8601 time such as 2026-12-31T00:00:00Z")
                }
                at = parsed
            }
            if at > now && !dryRun && !force {
                throw ValidationError("--as-of is in the future: that would purge data early. Use --dry-run, or --force if you mean it.")
            }
            let services = try await storage.openServices()
            let purge = RetentionPurge(services: services)
            if dryRun {
                let plan = try await purge.plan(asOf: at)
                print("dry run at \(at.formatted(.iso8601)), \(plan.settings.retentionDays)-day retention: nothing changed")
                for planned in plan.due {
                    print("would purge case \(planned.supportCase.number) (closed \(planned.supportCase.closedAt!.formatted(.iso8601))): "
                          + "\(planned.uploads.count) items, \(planned.bytes) bytes")
                    for upload in planned.uploads { print("  \(upload.id)  \(upload.offset) bytes  \(upload.filename)") }
                }
                for held in plan.held {
                    print("skipped case \(held.supportCase.number): legal hold (\(held.uploads.count) items, \(held.bytes) bytes)")
                }
                print("total: \(plan.due.count) cases, \(plan.due.reduce(0) { $0 + $1.uploads.count }) items, "
                      + "\(plan.due.reduce(Int64(0)) { $0 + $1.bytes }) bytes")
                return
            }
            let run = try await purge.run(asOf: at, trigger: .cli)
            print("purge run \(run.id!): \(run.casesPurged) cases, \(run.itemsPurged) items, \(run.bytesFreed) bytes freed, "
                  + "\(run.casesSkippedForHold) cases on legal hold skipped\(run.errors.map { "; errors: \($0)" } ?? "")")
        }
    }

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the purge audit log.")
        @OptionGroup var storage: StorageOptions
        @Option(help: "How many runs to show.") var limit = 20
        @Flag(help: "List each purged item.") var items = false

        func run() async throws {
            let database = try await storage.openServices().database
            for run in try await database.purgeRuns(limit: limit) {
                print("run \(run.id!)  \(run.state.rawValue)  started \(run.startedAt.formatted(.iso8601))  as of \(run.asOf.formatted(.iso8601))  "
                      + "\(run.retentionDays)d  \(run.trigger.rawValue)  cases \(run.casesPurged)  items \(run.itemsPurged)  "
                      + "bytes \(run.bytesFreed)  held \(run.casesSkippedForHold)\(run.errors.map { "  errors: \($0)" } ?? "")")
                if items {
                    for item in try await database.purgeItems(runID: run.id!) {
                        print("  \(item.caseNumber)  \(item.uploadID)  \(item.previousState.rawValue)  \(item.bytes) bytes  \(item.filename)")
                    }
                }
            }
        }
    }
}

struct Settings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Retention settings shared by `serve` and `purge`: retention-days (default \(RetentionSettings.defaults.retentionDays)), reopen-days (default \(RetentionSettings.defaults.reopenDays)).",
        subcommands: [Get.self, Set.self], defaultSubcommand: Get.self)

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Print the settings.")
        @OptionGroup var storage: StorageOptions
        func run() async throws {
            let settings = try await storage.openServices().database.retentionSettings()
            print("retention-days\t\(settings.retentionDays)")
            print("reopen-days\t\(settings.reopenDays)")
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Change a setting.")
        @OptionGroup var storage: StorageOptions
        @Argument(help: "retention-days or reopen-days") var key: String
        @Argument var value: Int
        func run() async throws {
            guard RetentionSettings.keys.contains(key) else { throw ValidationError("unknown setting \(key)") }
            guard (1...3650).contains(value) else { throw ValidationError("\(key) must be between 1 and 3650 days") }
            try await storage.openServices().database.setSetting(key, String(value))
            print("\(key)\t\(value)")
        }
    }
}

// MARK: - Client commands

/// `--server` and `--token` (or CASEFILES_SERVER / CASEFILES_TOKEN), retries and output.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server URL, e.g. http://127.0.0.1:8080 (default: $CASEFILES_SERVER).") var server: String?
    @Option(help: "Bearer token (default: $CASEFILES_TOKEN).") var token: String?
    @Option(help: "Attempts per request before giving up on network errors, timeouts and 5xx.") var retries = 10
    @Option(help: "First retry delay in seconds; it doubles each time (with jitter) up to --max-retry-delay.")
    var retryDelay = 0.5
    @Option(help: "Longest wait between retries, in seconds.") var maxRetryDelay = 30.0
    @Option(help: "Seconds one request may take.") var timeout: Int64 = 300
    @Flag(help: "Print only the final result.") var quiet = false

    func makeClient() throws -> CaseFilesClient {
        let environment = ProcessInfo.processInfo.environment
        guard let server = server ?? environment["CASEFILES_SERVER"], !server.isEmpty else {
            throw ValidationError("give --server or set CASEFILES_SERVER")
        }
        guard let token = token ?? environment["CASEFILES_TOKEN"], !token.isEmpty else {
            throw ValidationError("give --token or set CASEFILES_TOKEN")
        }
        guard retries >= 1, retryDelay >= 0, maxRetryDelay >= 0, timeout > 0 else {
            throw ValidationError("--retries must be at least 1; delays and --timeout must not be negative")
        }
        let quiet = self.quiet
        return CaseFilesClient(
            server: server, token: token,
            retry: RetryPolicy(maxAttempts: retries, baseDelay: retryDelay, maxDelay: maxRetryDelay),
            requestTimeout: timeout, log: { if !quiet { print($0) } })
    }
}

/// Runs a client operation, turning a `ClientFailure` into its documented exit code.
func runClient(_ options: ClientOptions, _ body: (CaseFilesClient) async throws -> Void) async throws {
    let client = try options.makeClient()
    do {
        try await body(client)
        await client.shutdown()
    } catch let failure as ClientFailure {
        await client.shutdown()
        FileHandle.standardError.write(Data("error: \(failure.message)\n".utf8))
        throw ExitCode(failure.kind.rawValue)
    } catch {
        await client.shutdown()
        throw error
    }
}

struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload files to a case over tus, resuming by itself after any interruption.",
        discussion: """
            Every chunk carries Upload-Checksum: sha256, and the last one the whole file's SHA-256 (Repr-Digest), \
            computed while sending: the file is read once. \
            The upload URL is remembered under $XDG_STATE_HOME/casefiles (or ~/.local/state/casefiles): run \
            the same command again after Ctrl-C, a crash or a reboot and it continues from the server's offset. \
            A file changed since is uploaded anew.

            """ + ClientFailure.exitCodeHelp)

    @OptionGroup var options: ClientOptions
    @Option(name: .customLong("case"), help: "Case number.") var caseNumber: String
    @Option(help: "Chunk size: auto, or bytes, or with KiB/MiB/GiB (default auto: starts at 8MiB and aims each chunk at about 2 s at the rate seen so far, between 1MiB and 32MiB).")
    var chunkSize = "auto"
    @Option(help: "Streams per file: N > 1 sends N contiguous parts at once as tus partial uploads, then a final upload the server verifies (tus concatenation). 1 (the default) measured fastest on loopback; through 50 ms round trips with 0.5% loss 4 streams were 2.0x and 8 were 2.8x one stream (README, Benchmark).")
    var parallel = 1
    @Option(help: "Compress each chunk with gzip (Content-Encoding: gzip): auto (on for text-like files, off for already-compressed ones, from the file's first 64 KiB), on, off.")
    var compress = "auto"
    @Argument(help: "Files to upload.") var files: [String]

    func run() async throws {
        let sizer: ChunkSizer
        if chunkSize == "auto" {
            sizer = .adaptive
        } else if let chunk = ByteCount.parse(chunkSize), chunk <= 1 << 30 {
            sizer = .fixed(chunk)
        } else {
            throw ValidationError("--chunk-size must be auto or a positive size up to 1GiB, like 8388608, 512KiB or 8MiB")
        }
        guard let compressMode = CompressMode(rawValue: compress) else {
            throw ValidationError("--compress must be auto, on or off")
        }
        guard let number = CaseNumber.normalise(caseNumber) else { throw ValidationError("--case must be 1 to 8 digits") }
        guard !files.isEmpty else { throw ValidationError("name at least one file") }
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be 1 to 64") }
        try await runClient(options) { client in
            let uploader = TusUploader(client: client, chunkSizer: sizer, quiet: options.quiet, compress: compressMode)
            for file in files {
                let result = parallel > 1
                    ? try await uploader.upload(path: file, caseNumber: number, streams: parallel)
                    : try await uploader.upload(path: file, caseNumber: number)
                print("uploaded \(file): attachment \(result.attachmentID) sha256 \(result.sha256) "
                      + "(\(result.size) bytes; resumed at \(result.resumedFrom); sent \(result.bytesSent))"
                      + (result.compressed ? " compressed to \(result.bodyBytesSent) bytes" : ""))
            }
        }
    }
}

struct Download: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download attachments, resuming after interruptions and verifying their SHA-256.",
        discussion: """
            Bytes go to PATH.part, which a later run resumes with Range/If-Range; the file is moved into \
            place only when its SHA-256 matches the server's Repr-Digest (otherwise the part is deleted).

            An existing file is never replaced without --force. Into a directory (-o DIR, --all, or . by \
            default) each file gets the attachment's name made safe: path separators, control and bidi \
            characters, and < > : " | ? * [ ] $ ` ! become _; leading dots, dashes, ~ and # and trailing \
            dots and spaces are removed; Windows device names (CON, NUL, COM1…) get a leading _; long names \
            are cut to 200 bytes; an empty one becomes "attachment". A name already taken gets a number: \
            server (1).log, server (2).log. A file already there with the same SHA-256 is kept as it is. \
            -o FILE is used as given, and refused if it holds something else. Each file's final path is \
            printed.

            """ + ClientFailure.exitCodeHelp)

    @OptionGroup var options: ClientOptions
    @Option(name: .shortAndLong, help: "Output file, or directory (default: the attachment's name here).") var output: String?
    @Option(name: .customLong("case"), help: "With --all: the case whose attachments to download.") var caseNumber: String?
    @Flag(help: "Download every verified attachment of --case into --output (a directory, default .).") var all = false
    @Flag(help: "Replace an existing file instead of numbering the new one (or refusing -o FILE); never one this run wrote.")
    var force = false
    @Argument(help: "Attachment ids.") var ids: [String] = []

    func run() async throws {
        if all {
            guard let raw = caseNumber, let number = CaseNumber.normalise(raw) else {
                throw ValidationError("--all needs --case NUMBER")
            }
            let directory = output ?? "."
            try await runClient(options) { client in
                do {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                } catch {
                    throw ClientFailure(.localFile, "cannot create the directory \(directory): \(error.localizedDescription)")
                }
                let verified = try await client.attachments(caseNumber: number).attachments.filter { $0.state == "verified" }
                try await download(verified.map(\.id), to: .directory(directory), client: client)
            }
            return
        }
        guard !ids.isEmpty else { throw ValidationError("name an attachment id, or use --case NUMBER --all") }
        let destination = DownloadDestination(output: output)
        if ids.count > 1, case .file = destination {
            throw ValidationError("with several ids, --output must be an existing directory")
        }
        try await runClient(options) { client in
            if case .directory(let directory) = destination, !FileManager.default.fileExists(atPath: directory) {
                do {  // -o new/ (a path ending in /) names a directory to create
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                } catch {
                    throw ClientFailure(.localFile, "cannot create the directory \(directory): \(error.localizedDescription)")
                }
            }
            try await download(ids, to: destination, client: client)
        }
    }

    /// Downloads each id in turn, printing one line per file with its final path. The paths written so
    /// far are passed on, so that two attachments with one name become two files, even with --force.
    private func download(_ ids: [String], to destination: DownloadDestination, client: CaseFilesClient) async throws {
        let downloader = AttachmentDownloader(client: client, quiet: options.quiet)
        var written = Set<String>()
        for id in ids {
            let result = try await downloader.download(id: id, to: destination, force: force, avoiding: written)
            written.insert(result.path)
            let note = result.alreadyPresent ? "; already there, not written again" : ""
            print("downloaded \(result.path): sha256 \(result.sha256) (\(result.size) bytes\(note))")
        }
    }
}

struct Attachments: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a case's attachments and unfinished uploads.")
    @OptionGroup var options: ClientOptions
    @Option(name: .customLong("case"), help: "Case number.") var caseNumber: String

    func run() async throws {
        guard let number = CaseNumber.normalise(caseNumber) else { throw ValidationError("--case must be 1 to 8 digits") }
        try await runClient(options) { client in
            let list = try await client.attachments(caseNumber: number)
            for a in list.attachments {
                print([a.id, a.state, String(a.size), a.sha256 ?? "-", a.uploadedBy, a.filename].joined(separator: "\t"))
            }
            for u in list.uploads {
                print([u.id, "uploading", "\(u.offset)/\(u.length.map(String.init) ?? "?")", "-", "-", u.filename].joined(separator: "\t"))
            }
        }
    }
}

// MARK: - Drop credentials (issue #20): client commands, with an engineer's or admin's token

extension Cases {
    struct DropTokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drop-token",
            abstract: "Create a drop credential for a case and print it with a ready-to-run curl command (engineers, admins).",
            discussion: "The credential uploads into this case only (curl -T FILE -u CASE:TOKEN URL/), expires after "
                + "--expires (at most 90d) and is revoked at once when the case closes. Talks to the server "
                + "(--server, --token of an engineer or admin). " + ClientFailure.exitCodeHelp)
        @OptionGroup var options: ClientOptions
        @Argument(help: "Case number.") var number: String
        @Option(help: "Lifetime: seconds, or with s/m/h/d (default 14d; at most 90d).") var expires: String?

        func run() async throws {
            let number = try Cases.number(self.number)
            let lifetime = try expires.map { try DurationOption.parse($0, flag: "--expires") }
            try await runClient(options) { client in
                let token = try await client.createDropToken(caseNumber: number, expiresIn: lifetime)
                let url = client.server + (token.uploadPath ?? "/api/v1/cases/\(number)/files/")
                print(token.token ?? "")
                print("drop credential \(token.id) for case \(number), expires \(token.expiresAt.formatted(.iso8601))")
                print("upload: curl -fsS -T FILE -u \(number):\(token.token ?? "") \(url)")
            }
        }
    }

    struct DropTokensCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drop-tokens",
            abstract: "List a case's drop credentials: id, state, creator, created, expires, last used (never the secret).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Case number.") var number: String

        func run() async throws {
            let number = try Cases.number(self.number)
            try await runClient(options) { client in
                for t in try await client.dropTokens(caseNumber: number) {
                    print([String(t.id), t.state, t.createdBy, t.createdAt.formatted(.iso8601),
                           t.expiresAt.formatted(.iso8601), t.lastUsedAt?.formatted(.iso8601) ?? "never"]
                        .joined(separator: "\t"))
                }
            }
        }
    }

    struct RevokeDropTokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke-drop-token", abstract: "Revoke one of a case's drop credentials at once.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Case number.") var number: String
        @Argument(help: "The credential's id (from drop-tokens).") var id: Int64

        func run() async throws {
            let number = try Cases.number(self.number)
            try await runClient(options) { client in
                try await client.revokeDropToken(caseNumber: number, id: id)
                print("revoked drop credential \(id) of case \(number)")
            }
        }
    }
}
