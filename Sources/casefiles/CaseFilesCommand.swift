import ArgumentParser
import CaseFiles
import Foundation
import Hummingbird
import Logging

@main
struct CaseFilesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casefiles",
        abstract: "Resumable, integrity-checked file transfer for support cases (tus 1.0).",
        subcommands: [Serve.self, Users.self, Cases.self, Purge.self, Settings.self])
}

/// `--storage PATH` (default `./Storage`, or `CASEFILES_STORAGE`): the database and blobs.
struct StorageOptions: ParsableArguments {
    @Option(help: "Storage root holding the database and blobs (default: $CASEFILES_STORAGE or ./Storage).")
    var storage: String?

    var url: URL {
        URL(fileURLWithPath: storage ?? ProcessInfo.processInfo.environment["CASEFILES_STORAGE"] ?? "Storage")
    }

    func openServices() throws -> AppServices {
        try AppServices.open(storage: url)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP service.")

    @OptionGroup var storage: StorageOptions
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8080
    @Option(help: "Largest upload accepted, in bytes (default: no limit).") var maxUploadSize: Int64?
    @Option(help: "Free disk space to keep in reserve, in bytes; creations that would use it get 507.")
    var minFreeSpace: Int64 = 256 * 1024 * 1024
    @Option(help: "Unfinished uploads without progress for this long expire: seconds, or with s/m/h/d (default 7d).")
    var uploadExpiry = "7d"
    @Option(help: "How often the retention purge runs: seconds, or with s/m/h/d (default 1h).")
    var purgeInterval = "1h"
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).") var logLevel = "info"

    func run() async throws {
        guard let purgeEvery = DurationOption.seconds(purgeInterval) else {
            throw ValidationError("--purge-interval must be a number of seconds or use a suffix: 90s, 30m, 12h, 7d")
        }
        guard let expiry = DurationOption.seconds(uploadExpiry) else {
            throw ValidationError("--upload-expiry must be a number of seconds or use a suffix: 90s, 30m, 12h, 7d")
        }
        let configuration = AppConfiguration(
            host: host, port: port, storage: storage.url,
            limits: UploadLimits(maxUploadSize: maxUploadSize, minFreeBytes: minFreeSpace, uploadExpiry: expiry),
            logLevel: Logger.Level(rawValue: logLevel) ?? .info,
            purgeInterval: .seconds(purgeEvery))
        try await buildApplication(configuration).runService()
    }
}

enum DurationOption {
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
            let services = try storage.openServices()
            _ = try services.database.createUser(User(
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
            guard try storage.openServices().database.revokeUser(named: name, at: Date()) else {
                throw ValidationError("no active user named \(name)")
            }
            print("revoked \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var storage: StorageOptions

        func run() async throws {
            for user in try storage.openServices().database.allUsers() {
                let state = user.revokedAt == nil ? "active" : "revoked"
                print([user.name, user.role.rawValue, user.account ?? "-", state].joined(separator: "\t"))
            }
        }
    }
}

struct Cases: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage support cases.",
        subcommands: [Create.self, List.self, Show.self, Status.self, Close.self, Reopen.self, Hold.self, Release.self])

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
            for c in try storage.openServices().database.allCases() { print(Cases.describe(c)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a case, its history and its attachments.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        func run() async throws {
            let database = try storage.openServices().database
            let number = try Cases.number(number)
            guard let c = try database.supportCaseNow(number: number) else { throw ValidationError("no case \(number)") }
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
            let services = try storage.openServices()
            let now = Date()
            let subStatus = self.subStatus
            let c = try await services.database.transitionCase(
                try Cases.number(number), kind: .status, actor: Cases.actor.name, comment: comment, at: now) {
                    try CaseLifecycle.setStatus($0, to: status, subStatus: subStatus, by: Cases.actor, at: now)
                }
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
            let services = try storage.openServices()
            let now = Date()
            let subStatus = self.subStatus
            let c = try await services.database.transitionCase(
                try Cases.number(number), kind: .closed, actor: Cases.actor.name, comment: comment, at: now) {
                    try CaseLifecycle.close($0, subStatus: subStatus, by: Cases.actor, at: now)
                }
            print(Cases.describe(c))
        }
    }

    struct Reopen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reopen a case closed within the reopen window.")
        @OptionGroup var storage: StorageOptions
        @Argument var number: String
        @Option var comment: String?
        func run() async throws {
            let services = try storage.openServices()
            let settings = try services.database.retentionSettings()
            let now = Date()
            let c = try await services.database.transitionCase(
                try Cases.number(number), kind: .reopened, actor: Cases.actor.name, comment: comment, at: now) {
                    try CaseLifecycle.reopen($0, by: Cases.actor, at: now, settings: settings)
                }
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
        let c = try await storage.openServices().database.transitionCase(
            try Cases.number(number), kind: held ? .hold : .release, actor: Cases.actor.name, comment: nil, at: Date()) {
                var next = $0
                next.legalHold = held
                return next
            }
        print(Cases.describe(c))
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
            let services = try storage.openServices()
            let draft = try CaseFactory.newCase(
                account: account, subject: subject, number: number, priority: priority, requestType: requestType, at: Date())
            print(try services.database.createCase(draft, numberGiven: number != nil).number)
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
            let services = try storage.openServices()
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
            let run = try await purge.run(asOf: at, trigger: "cli")
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
            let database = try storage.openServices().database
            for run in try await database.purgeRuns(limit: limit) {
                print("run \(run.id!)  \(run.state)  started \(run.startedAt.formatted(.iso8601))  as of \(run.asOf.formatted(.iso8601))  "
                      + "\(run.retentionDays)d  \(run.trigger)  cases \(run.casesPurged)  items \(run.itemsPurged)  "
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
        abstract: "Retention settings shared by `serve` and `purge`: retention-days, reopen-days (default 30).",
        subcommands: [Get.self, Set.self], defaultSubcommand: Get.self)

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Print the settings.")
        @OptionGroup var storage: StorageOptions
        func run() async throws {
            let settings = try storage.openServices().database.retentionSettings()
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
            try storage.openServices().database.setSetting(key, String(value))
            print("\(key)\t\(value)")
        }
    }
}
