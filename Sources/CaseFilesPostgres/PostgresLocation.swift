import Foundation
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL metadata store lives: `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=MODE`
/// (`postgresql://` too; the libpq URI form, postgresql.org/docs/15/libpq-connect.html §34.1.1.2). The port defaults
/// to 5432; `sslmode` is `disable`, `prefer` (the default: TLS if the server offers it) or `require`. User, password
/// and database are percent-decoded.
public struct PostgresLocation: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode

    public enum SSLMode: String, Sendable {
        case disable, prefer, require
    }

    /// What a valid value looks like, for error messages.
    public static let expected = "a URL such as postgres://USER:PASSWORD@HOST:5432/DATABASE (sslmode=disable|prefer|require)"

    /// Nil when `text` is not such a URL (another scheme, no host, user or database, a bad port or sslmode).
    public init?(_ text: String) {
        guard let components = URLComponents(string: text),
              let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme),
              let host = components.host, !host.isEmpty,
              let username = components.user, !username.isEmpty
        else { return nil }
        let database = String(components.path.dropFirst())
        guard !database.isEmpty, !database.contains("/") else { return nil }
        var sslMode = SSLMode.prefer
        for item in components.queryItems ?? [] {
            guard item.name == "sslmode", let mode = item.value.flatMap(SSLMode.init(rawValue:)) else { return nil }
            sslMode = mode
        }
        if let port = components.port, !(1...65535).contains(port) { return nil }
        self.host = host
        self.port = components.port ?? 5432
        self.username = username.removingPercentEncoding ?? username
        self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        self.database = database.removingPercentEncoding ?? database
        self.sslMode = sslMode
    }

    /// The URL with the password replaced by `***`, for `config check` and logs (a secret is never printed).
    public var redacted: String {
        "postgres://\(username)\(password == nil ? "" : ":***")@\(host):\(port)/\(database)"
            + (sslMode == .prefer ? "" : "?sslmode=\(sslMode.rawValue)")
    }

    /// The same server and credentials, another database (the tests make one per test).
    public func database(_ name: String) -> PostgresLocation {
        var other = self
        other.database = name
        return other
    }

    var clientConfiguration: PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS = switch sslMode {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
        return PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
    }

    /// One connection of its own (opening: migrations), failing at once where the pool would retry.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS = switch sslMode {
        case .disable: .disable
        case .prefer: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        return PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
    }
}

/// The PostgreSQL database could not be opened (unreachable, login refused, a migration failed).
public struct PostgresOpenError: Error, CustomStringConvertible {
    public let location: PostgresLocation
    public let underlying: any Error

    public var description: String {
        // PSQLError's description hides the server's message; its reflection holds it (and no bound values here:
        // connecting and migrating bind none but migration names).
        "cannot open the metadata database \(location.redacted): \(String(reflecting: underlying))"
    }
}
