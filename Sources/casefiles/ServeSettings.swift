import Foundation
import Logging
import CaseFilesPostgres
import CaseFilesServer
import CaseFilesStorage
import Yams

/// Every `serve` setting, in one table: adding a setting is one line in `ServeSettings.all`. Each one is
/// read under the same name from three places, and the first that has it wins:
/// the flag `--max-upload-size`, the environment variable `CASEFILES_MAX_UPLOAD_SIZE`, the key
/// `max-upload-size` of the YAML file (`--config FILE` or `CASEFILES_CONFIG`), else `AppConfiguration`'s
/// default. `casefiles config check` prints the outcome with each value's source.
enum ServeSettings {
    static let all: [ServeSetting] = [
        .text("host", \.host, help: "Address to listen on"),
        .port("port", \.port, help: "Port to listen on"),
        .path("storage", \.storage, help: "Storage root holding the database and blobs"),
        .databaseURL("database", \.database, help: "The metadata store on PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (none: the SQLite file in the storage root)"),
        .optionalBytes("max-upload-size", \.limits.maxUploadSize, help: "Largest upload accepted, in bytes (none: no limit)"),
        .bytes("min-free-space", \.limits.minFreeBytes, help: "Free disk space to keep in reserve, in bytes; creations that would use it get 507"),
        .seconds("upload-expiry", \.limits.uploadExpiry, help: "Unfinished uploads without progress for this long expire"),
        .rate("min-upload-rate", \.limits.minReceiveRate, help: "Cut off an upload body slower than this many bytes/s over stall-timeout"),
        .seconds("stall-timeout", \.limits.stallWindow, help: "The window for min-upload-rate"),
        .duration("purge-interval", \.purgeInterval, help: "How often the retention purge runs"),
        .duration("header-timeout", \.connections.headerTimeout, help: "Close a connection whose request header section has not arrived within this"),
        .duration("body-timeout", \.connections.bodyTimeout, help: "Close a connection whose request body (not an upload's) has not arrived within this"),
        .duration("idle-timeout", \.connections.idleTimeout, help: "Close a keep-alive connection that sends no new request within this"),
        .duration("send-timeout", \.connections.sendTimeout, help: "Close a connection whose client stops reading a response for this long"),
        .count("max-connections", \.connections.maxConnections, help: "Open connections at most; at the cap the longest-idle one is closed (default: (open-files limit - 64) / 2, at most 10,000)"),
        .nice("event-loop-nice", \.eventLoopNice, help: "The event loops' nice value: on busy cores they accept, read and route requests ahead of the hashing and of other processes (below 0 needs RLIMIT_NICE, which the packaged unit sets, or CAP_SYS_NICE; without either the loops keep the process's nice and serve logs a warning)"),
        .logLevel("log-level", \.logLevel, help: "Log level: trace, debug, info, notice, warning, error, critical"),
        .flag("strict-permissions", \.security.strictPermissions, help: "Refuse to start if a path under the storage root is open to other users"),
        .seconds("max-link-lifetime", \.security.maxLinkLifetime, help: "Longest life of a signed download link"),
        .optionalPath("tls-cert", \.tls.certificatePath, help: "Serve HTTPS with this PEM certificate chain (with tls-key; reloaded on SIGHUP)"),
        .optionalPath("tls-key", \.tls.privateKeyPath, help: "The PEM private key of tls-cert"),
        .cidrs("trusted-proxy", \.trustedProxies, help: "A proxy (CIDR, repeatable) whose Forwarded / X-Forwarded-* headers are believed"),
        .origins("cors-origin", \.corsOrigins, help: "An origin (repeatable) whose pages may call the API from a browser, e.g. https://portal.example (none: same-origin only)"),
        .count("max-unfinished-uploads-per-user", \.limits.maxUnfinishedUploadsPerUser, help: "Unfinished uploads one user may have at once; more: 429"),
        .count("max-unfinished-uploads-per-case", \.limits.maxUnfinishedUploadsPerCase, help: "Unfinished uploads one case may have at once; more: 429"),
        .bytes("max-case-size", \.limits.maxCaseBytes, help: "Bytes one case may hold, declared plus stored; more: 413 (default 1 TiB)"),
        .count("max-compression-ratio", \.limits.maxCompressionRatio, help: "A compressed upload body (Content-Encoding: gzip/deflate) may expand to this many bytes per byte sent, past its first MiB; more: 413"),
        .count("max-comment-size", \.security.maxCommentBytes, help: "Longest comment on a case transition, in bytes; longer: 400"),
        .countOrZero("rate-limit", \.security.rateLimitPerMinute, help: "State-changing requests per user per minute, other than upload data (PATCH, HEAD); more: 429 with Retry-After; 0 turns it off"),
        .address("metrics-listen", \.metricsListen, help: "Serve GET /metrics (Prometheus) and /readyz on this separate HOST:PORT, e.g. 127.0.0.1:9090 (none: off)"),
        .logFormat("log-format", \.logFormat, help: "Log line format: logfmt or json"),
        .urls("webhook", \.webhooks, help: "POST a signed JSON event to this URL (repeatable) when an attachment is verified, an upload fails or a case's data is purged"),
        .optionalPath("webhook-secret-file", \.webhookSecretFile, help: "The shared secret events are signed with (HMAC-SHA-256); created 0600 if missing (none: <storage>/webhook.secret)"),
        .seconds("webhook-retry-base", \.webhookRetryBase, help: "Wait before the first retry of a refused event, doubled for each next one up to 1 hour, for 24 hours"),
        .count("bundle-max-entries", \.bundleLimits.maxEntries, help: "Entries one archive's index lists at most; past it the index is marked truncated"),
        .s3Bucket("blob-store", \.objectStore.bucket, help: "Keep blobs in this S3-compatible bucket, s3://BUCKET, instead of under the storage root (none: files); with s3-endpoint, s3-region and the s3 keys"),
        .optionalURL("s3-endpoint", \.objectStore.endpoint, help: "The object store's S3 API for blob-store, http(s)://HOST[:PORT]"),
        .text("s3-region", \.objectStore.region, help: "The region requests to s3-endpoint are signed for (AWS Signature Version 4)"),
        .optionalText("s3-access-key-id", \.objectStore.accessKeyID, help: "The access key id for s3-endpoint"),
        .secret("s3-secret-access-key", \.objectStore.secretAccessKey, help: "The secret access key for s3-endpoint (never shown nor logged; better in CASEFILES_S3_SECRET_ACCESS_KEY or s3-secret-access-key-file)"),
        .optionalPath("s3-secret-access-key-file", \.objectStore.secretAccessKeyFile, help: "A file holding the secret access key, read when s3-secret-access-key is not given"),
        .partSize("s3-part-size", \.objectStore.partSize, help: "The first multipart-upload parts' size in bytes (at least 5 MiB; parts double every 1,000 parts)"),
        .optionalPath("trace-uploads", \.uploadTracePath, help: "Append each upload request's timeline (where its time went, from the server's clock) to this file as JSON lines; Scripts/upload-timeline sums it up"),
    ]

    static func named(_ name: String) -> ServeSetting? { all.first { $0.name == name } }

    /// The environment variable naming the configuration file when `--config` is not given.
    static let configEnvironmentVariable = "CASEFILES_CONFIG"
}

/// Where a setting's value came from, by rising precedence.
enum SettingSource: Sendable, Equatable {
    case `default`
    case file(String)
    case environment(String)
    case flag(String)

    var label: String {
        switch self {
        case .default: "default"
        case .file(let path): "file \(path)"
        case .environment(let name): "env \(name)"
        case .flag(let flag): "flag \(flag)"
        }
    }
}

/// One setting: its name (the flag without `--`, the YAML key, the environment variable's tail) and how
/// its text becomes a value of `AppConfiguration`.
struct ServeSetting: @unchecked Sendable {  // the closures capture only key paths into a value type
    enum Arity { case single, flag, list }
    let name: String
    let arity: Arity
    let help: String
    /// What a valid value looks like, for error messages.
    let expected: String
    /// Sets the parsed value; false if a text does not parse.
    let apply: (_ texts: [String], _ configuration: inout AppConfiguration) -> Bool
    let show: (AppConfiguration) -> String

    var flag: String { "--" + name }
    var environmentVariable: String { "CASEFILES_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }

    private static func single<T>(_ name: String, _ path: WritableKeyPath<AppConfiguration, T>, arity: Arity = .single,
                                  expected: String, help: String, parse: @escaping (String) -> T?,
                                  show: @escaping (T) -> String) -> ServeSetting {
        ServeSetting(name: name, arity: arity, help: help, expected: expected, apply: { texts, configuration in
            guard let text = texts.last, let value = parse(text) else { return false }
            configuration[keyPath: path] = value
            return true
        }, show: { show($0[keyPath: path]) })
    }

    static func text(_ name: String, _ path: WritableKeyPath<AppConfiguration, String>, help: String) -> ServeSetting {
        single(name, path, expected: "a non-empty string", help: help, parse: { $0.isEmpty ? nil : $0 }, show: { $0 })
    }
    static func port(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int>, help: String) -> ServeSetting {
        single(name, path, expected: "a port number, 0 to 65535", help: help,
               parse: { Int($0).flatMap { (0...65535).contains($0) ? $0 : nil } }, show: { "\($0)" })
    }
    static func count(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int>, help: String) -> ServeSetting {
        single(name, path, expected: "a whole number, at least 1", help: help,
               parse: { Int($0).flatMap { $0 >= 1 ? $0 : nil } }, show: { "\($0)" })
    }
    static func countOrZero(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int>, help: String) -> ServeSetting {
        single(name, path, expected: "a whole number, 0 or more", help: help,
               parse: { Int($0).flatMap { $0 >= 0 ? $0 : nil } }, show: { "\($0)" })
    }
    static func nice(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int>, help: String) -> ServeSetting {
        let range = ThreadPriority.eventLoopRange
        return single(name, path, expected: "a nice value, \(range.lowerBound) to \(range.upperBound)", help: help,
                      parse: { Int($0).flatMap { range.contains($0) ? $0 : nil } }, show: { "\($0)" })
    }
    static func address(_ name: String, _ path: WritableKeyPath<AppConfiguration, (host: String, port: Int)?>,
                        help: String) -> ServeSetting {
        single(name, path, expected: "HOST:PORT, such as 127.0.0.1:9090", help: help,
               parse: { MetricsListener.parseAddress($0).map { .some($0) } }, show: { $0.map { "\($0.host):\($0.port)" } ?? "none" })
    }
    static func logFormat(_ name: String, _ path: WritableKeyPath<AppConfiguration, LogFormat>, help: String) -> ServeSetting {
        single(name, path, expected: "logfmt or json", help: help, parse: LogFormat.init(rawValue:), show: { $0.rawValue })
    }
    static func path(_ name: String, _ path: WritableKeyPath<AppConfiguration, URL>, help: String) -> ServeSetting {
        single(name, path, expected: "a path", help: help,
               parse: { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }, show: { $0.path })
    }
    static func optionalPath(_ name: String, _ path: WritableKeyPath<AppConfiguration, String?>, help: String) -> ServeSetting {
        single(name, path, expected: "a path", help: help, parse: { $0.isEmpty ? nil : $0 }, show: { $0 ?? "none" })
    }
    /// A PostgreSQL URL (`PostgresLocation`), shown with its password hidden.
    static func databaseURL(_ name: String, _ path: WritableKeyPath<AppConfiguration, String?>, help: String) -> ServeSetting {
        single(name, path, expected: PostgresLocation.expected, help: help,
               parse: { PostgresLocation($0) == nil ? nil : .some($0) },
               show: { $0.flatMap(PostgresLocation.init)?.redacted ?? "none (SQLite in the storage root)" })
    }
    static func optionalText(_ name: String, _ path: WritableKeyPath<AppConfiguration, String?>, help: String) -> ServeSetting {
        single(name, path, expected: "a non-empty string", help: help, parse: { $0.isEmpty ? nil : $0 }, show: { $0 ?? "none" })
    }
    /// A credential: shown only as whether it is set.
    static func secret(_ name: String, _ path: WritableKeyPath<AppConfiguration, String?>, help: String) -> ServeSetting {
        single(name, path, expected: "a non-empty string", help: help, parse: { $0.isEmpty ? nil : $0 },
               show: { $0 == nil ? "none" : "(set)" })
    }
    static func optionalURL(_ name: String, _ path: WritableKeyPath<AppConfiguration, URL?>, help: String) -> ServeSetting {
        single(name, path, expected: "an absolute http:// or https:// URL without a path", help: help, parse: { text in
            guard let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil,
                  url.path.isEmpty || url.path == "/" else { return nil }
            return .some(url)
        }, show: { $0?.absoluteString ?? "none" })
    }
    static func s3Bucket(_ name: String, _ path: WritableKeyPath<AppConfiguration, String?>, help: String) -> ServeSetting {
        single(name, path, expected: "s3://BUCKET (3 to 63 lower-case letters, digits, dots and hyphens)", help: help,
               parse: { ObjectStoreSettings.bucket(fromURL: $0).map { .some($0) } }, show: { $0.map { "s3://\($0)" } ?? "none" })
    }
    static func partSize(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int64>, help: String) -> ServeSetting {
        single(name, path, expected: "a number of bytes, at least \(ObjectStoreSettings.minimumPartSize) (5 MiB)", help: help,
               parse: { Int64($0).flatMap { $0 >= ObjectStoreSettings.minimumPartSize ? $0 : nil } }, show: { "\($0)" })
    }
    static func bytes(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int64>, help: String) -> ServeSetting {
        single(name, path, expected: "a number of bytes, 0 or more", help: help,
               parse: { Int64($0).flatMap { $0 >= 0 ? $0 : nil } }, show: { "\($0)" })
    }
    static func optionalBytes(_ name: String, _ path: WritableKeyPath<AppConfiguration, Int64?>, help: String) -> ServeSetting {
        single(name, path, expected: "a number of bytes, 1 or more", help: help,
               parse: { Int64($0).flatMap { $0 >= 1 ? .some($0) : nil } }, show: { $0.map { "\($0)" } ?? "none" })
    }
    static func rate(_ name: String, _ path: WritableKeyPath<AppConfiguration, Double>, help: String) -> ServeSetting {
        single(name, path, expected: "bytes per second, 0 or more", help: help,
               parse: { Double($0).flatMap { $0 >= 0 && $0.isFinite ? $0 : nil } }, show: { "\(Int($0))" })
    }
    static func seconds(_ name: String, _ path: WritableKeyPath<AppConfiguration, TimeInterval>, help: String) -> ServeSetting {
        single(name, path, expected: "a positive number of seconds, or with a suffix: 90s, 30m, 12h, 7d", help: help,
               parse: DurationOption.seconds, show: DurationOption.format)
    }
    static func duration(_ name: String, _ path: WritableKeyPath<AppConfiguration, Duration>, help: String) -> ServeSetting {
        single(name, path, expected: "a positive number of seconds, or with a suffix: 90s, 30m, 12h, 7d", help: help,
               parse: { DurationOption.seconds($0).map { .milliseconds(Int64($0 * 1000)) } }, show: DurationOption.format)
    }
    static func logLevel(_ name: String, _ path: WritableKeyPath<AppConfiguration, Logger.Level>, help: String) -> ServeSetting {
        single(name, path, expected: "one of trace, debug, info, notice, warning, error, critical", help: help,
               parse: Logger.Level.init(rawValue:), show: { $0.rawValue })
    }
    static func flag(_ name: String, _ path: WritableKeyPath<AppConfiguration, Bool>, help: String) -> ServeSetting {
        single(name, path, arity: .flag, expected: "true or false", help: help,
               parse: { ["true": true, "false": false][$0.lowercased()] }, show: { "\($0)" })
    }
    static func urls(_ name: String, _ path: WritableKeyPath<AppConfiguration, [String]>, help: String) -> ServeSetting {
        ServeSetting(name: name, arity: .list, help: help, expected: "absolute http:// or https:// URLs",
                     apply: { texts, configuration in
            let valid = texts.allSatisfy { text in
                URL(string: text).map { ["http", "https"].contains($0.scheme?.lowercased() ?? "") && $0.host != nil } ?? false
            }
            guard valid else { return false }
            configuration[keyPath: path] = texts
            return true
        }, show: { $0[keyPath: path].isEmpty ? "none" : $0[keyPath: path].joined(separator: ",") })
    }
    static func origins(_ name: String, _ path: WritableKeyPath<AppConfiguration, [String]>, help: String) -> ServeSetting {
        ServeSetting(name: name, arity: .list, help: help, expected: "origins such as https://portal.example or http://localhost:3000 (scheme, host, optional port; no path)",
                     apply: { texts, configuration in
            let origins = texts.compactMap(CORSPolicy.origin(parsing:))
            guard origins.count == texts.count else { return false }
            configuration[keyPath: path] = origins
            return true
        }, show: { $0[keyPath: path].isEmpty ? "none" : $0[keyPath: path].joined(separator: ",") })
    }
    static func cidrs(_ name: String, _ path: WritableKeyPath<AppConfiguration, [CIDR]>, help: String) -> ServeSetting {
        ServeSetting(name: name, arity: .list, help: help, expected: "IP addresses or CIDR ranges such as 10.0.0.0/8 or ::1",
                     apply: { texts, configuration in
            let ranges = texts.compactMap(CIDR.init)
            guard ranges.count == texts.count else { return false }
            configuration[keyPath: path] = ranges
            return true
        }, show: { $0[keyPath: path].isEmpty ? "none" : $0[keyPath: path].map(\.description).joined(separator: ",") })
    }
}

/// A setting's value that is not one, or a key no setting has; the message names it and what is expected.
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
}

/// The configuration in force and where each value came from.
struct EffectiveConfiguration {
    var configuration: AppConfiguration
    var sources: [String: SettingSource]

    /// Resolves every setting of `ServeSettings.all`: flags (`arguments`, as given after the command),
    /// then `environment`, then the YAML file (`configFile`, else `CASEFILES_CONFIG`), then `defaults`.
    /// Throws `ConfigurationError` naming the flag, variable or key at fault and what it expects.
    static func resolve(arguments: [String], configFile: String?, environment: [String: String],
                        defaults: AppConfiguration) throws -> EffectiveConfiguration {
        let flags = try parseFlags(arguments)
        let filePath = configFile ?? environment[ServeSettings.configEnvironmentVariable]
        let file = try filePath.map(readFile) ?? [:]
        var result = EffectiveConfiguration(configuration: defaults, sources: [:])
        for setting in ServeSettings.all {
            var texts: [String]?
            var source = SettingSource.default
            if let given = flags[setting.name] {
                (texts, source) = (given, .flag(setting.flag))
            } else if let given = environment[setting.environmentVariable] {
                let values = setting.arity == .list
                    ? given.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } : [given]
                (texts, source) = (values, .environment(setting.environmentVariable))
            } else if let given = file[setting.name], let filePath {
                (texts, source) = (given, .file(filePath))
            }
            guard let texts else { result.sources[setting.name] = .default; continue }
            guard setting.apply(texts, &result.configuration) else {
                let shown = texts.map { "'\($0)'" }.joined(separator: ", ")
                throw ConfigurationError(description: "\(setting.name) (\(source.label)): expected \(setting.expected), got \(shown)")
            }
            result.sources[setting.name] = source
        }
        return result
    }

    /// `--name value`, `--name=value`, and `--name` alone for a flag; a list setting may repeat.
    static func parseFlags(_ arguments: [String]) throws -> [String: [String]] {
        var values: [String: [String]] = [:]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else {
                throw ConfigurationError(description: "unexpected argument '\(argument)': settings are given as --name value")
            }
            let body = argument.dropFirst(2)
            let name = String(body.prefix { $0 != "=" })
            guard let setting = ServeSettings.named(name) else {
                throw ConfigurationError(description: "unknown option '--\(name)'; the settings are: \(ServeSettings.all.map(\.flag).joined(separator: " "))")
            }
            var value: String
            if let equals = body.firstIndex(of: "=") {
                value = String(body[body.index(after: equals)...])
            } else if setting.arity == .flag {
                value = "true"
            } else {
                guard index < arguments.count else {
                    throw ConfigurationError(description: "--\(name) needs a value: \(setting.expected)")
                }
                value = arguments[index]
                index += 1
            }
            values[name] = setting.arity == .list ? (values[name] ?? []) + [value] : [value]
        }
        return values
    }

    /// The YAML file's keys and their values as text (a list for a sequence). The file is a mapping of
    /// setting names to scalars (lists for repeatable settings); any other key is an error naming it.
    static func readFile(_ path: String) throws -> [String: [String]] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigurationError(description: "configuration file \(path): cannot be read (\(error.localizedDescription))")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigurationError(description: "configuration file \(path): not valid YAML: \(error)")
        }
        guard let root else { return [:] }  // an empty file sets nothing
        guard let mapping = root.mapping else {
            throw ConfigurationError(description: "configuration file \(path): expected a mapping of setting names to values")
        }
        var values: [String: [String]] = [:]
        for (key, value) in mapping {
            let line = key.mark.map { " line \($0.line)" } ?? ""
            guard let name = key.string, let setting = ServeSettings.named(name) else {
                throw ConfigurationError(description: "configuration file \(path)\(line): unknown key '\(key.string ?? "\(key)")'; the keys are: \(ServeSettings.all.map(\.name).joined(separator: ", "))")
            }
            switch value {
            case .scalar(let scalar):
                values[name] = [scalar.string]
            case .sequence(let sequence) where setting.arity == .list:
                let items = sequence.compactMap(\.scalar?.string)
                guard items.count == sequence.count else {
                    throw ConfigurationError(description: "\(name) (file \(path)\(line)): expected a list of \(setting.expected)")
                }
                values[name] = items
            default:
                throw ConfigurationError(description: "\(name) (file \(path)\(line)): expected \(setting.expected), got a \(value.sequence != nil ? "list" : "mapping")")
            }
        }
        return values
    }

    /// One line per setting: name, value, source.
    func report() -> String {
        let width = ServeSettings.all.map(\.name.count).max() ?? 0
        return ServeSettings.all.map { setting in
            let name = setting.name.padding(toLength: width + 2, withPad: " ", startingAt: 0)
            let value = setting.show(configuration)
            return name + value.padding(toLength: max(value.count, 24) + 2, withPad: " ", startingAt: 0)
                + (sources[setting.name] ?? .default).label
        }.joined(separator: "\n")
    }
}
