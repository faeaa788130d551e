import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle
import UnixSignals

/// `serve --tls-cert PEM --tls-key PEM`: the certificate chain and private key files (PEM). Both or neither.
public struct TLSFiles: Sendable, Equatable {
    /// The server's certificate, then any intermediates, in one PEM file.
    public var certificatePath: String?
    /// Its private key, PEM (unencrypted).
    public var privateKeyPath: String?

    public init(certificatePath: String? = nil, privateKeyPath: String? = nil) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }

    public var isEnabled: Bool { certificatePath != nil || privateKeyPath != nil }

    /// Reads both files as `serve` would (when either is set); throws `TLSSetupError` naming the one at fault.
    public func validate() throws {
        if isEnabled { _ = try makeContext() }
    }

    /// Reads both files into a server context. HTTP/1.1 only (ALPN `http/1.1`): the connection handlers
    /// (`GuardedHTTP1Channel`) are HTTP/1-specific. Throws `TLSSetupError` naming the file at fault.
    public func makeContext() throws -> NIOSSLContext {
        guard let certificatePath, let privateKeyPath else {
            throw TLSSetupError(message: "tls-cert and tls-key go together: give both or neither")
        }
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch {
            throw TLSSetupError(message: "tls-cert \(certificatePath): expected a PEM certificate file (\(error))")
        }
        guard !chain.isEmpty else { throw TLSSetupError(message: "tls-cert \(certificatePath): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem) } catch {
            throw TLSSetupError(message: "tls-key \(privateKeyPath): expected an unencrypted PEM private key file (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["http/1.1"]
        do { return try NIOSSLContext(configuration: configuration) } catch {
            throw TLSSetupError(message: "tls-cert and tls-key: OpenSSL refused the pair, is the key the certificate's? (\(error))")
        }
    }
}

public struct TLSSetupError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The TLS context new connections get. Each connection takes the context in force when it is accepted
/// (`GuardedHTTP1Channel`) and keeps it for its life, so replacing it (SIGHUP) never touches a connection
/// already open, an upload in flight included; HummingbirdTLS would fix the context at start.
public final class TLSContextBox: Sendable {
    private let files: TLSFiles
    private let context: NIOLockedValueBox<NIOSSLContext>

    public init(files: TLSFiles) throws {
        self.files = files
        self.context = NIOLockedValueBox(try files.makeContext())
    }

    var current: NIOSSLContext { context.withLockedValue { $0 } }

    /// Re-reads both files; on any error the context in force stays and the error is thrown.
    func reload() throws {
        let fresh = try files.makeContext()
        context.withLockedValue { $0 = fresh }
    }
}

/// Reloads the certificate and key on SIGHUP (as nginx does), logging the outcome; a bad file keeps the
/// previous context rather than stopping the service.
struct TLSReloadService: Service {
    let box: TLSContextBox
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            do {
                try box.reload()
                logger.notice("TLS certificate reloaded on SIGHUP: new connections use it")
            } catch {
                logger.error("TLS certificate not reloaded, the previous one stays in use: \(error)")
            }
        }
    }
}
