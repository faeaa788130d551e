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
        subcommands: [Serve.self, Users.self, Cases.self])
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
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).") var logLevel = "info"

    func run() async throws {
        guard let expiry = DurationOption.seconds(uploadExpiry) else {
            throw ValidationError("--upload-expiry must be a number of seconds or use a suffix: 90s, 30m, 12h, 7d")
        }
        let configuration = AppConfiguration(
            host: host, port: port, storage: storage.url,
            limits: UploadLimits(maxUploadSize: maxUploadSize, minFreeBytes: minFreeSpace, uploadExpiry: expiry),
            logLevel: Logger.Level(rawValue: logLevel) ?? .info)
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
    static let configuration = CommandConfiguration(abstract: "Manage support cases.", subcommands: [Create.self])

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
