import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import ServiceLifecycle
import NIOCore
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

public struct AppConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var storage: URL
    public var limits: UploadLimits
    /// Deadlines per connection and the cap on open connections.
    public var connections: ConnectionLimits
    public var logLevel: Logger.Level
    /// How often abandoned uploads are looked for.
    public var expirySweepInterval: Duration
    /// How often the retention purge runs.
    public var purgeInterval: Duration
    /// Storage permissions and signed-link lifetime (`--strict-permissions`, `--max-link-lifetime`).
    public var security = SecurityPolicy()
    /// `--trace-uploads FILE`: each append request's timeline (`AppendTimeline`) as a JSON line; nil: off.
    public var uploadTracePath: String?
    /// `--tls-cert` and `--tls-key`: HTTPS instead of HTTP, reloaded on SIGHUP.
    public var tls = TLSFiles()
    /// `--trusted-proxy`: the peers whose `Forwarded` / `X-Forwarded-*` headers are believed.
    public var trustedProxies: [CIDR] = []

    public init(host: String = "127.0.0.1", port: Int = 8080, storage: URL = URL(fileURLWithPath: "Storage"),
                limits: UploadLimits = .init(), connections: ConnectionLimits = .init(), logLevel: Logger.Level = .info,
                expirySweepInterval: Duration = .seconds(600), purgeInterval: Duration = .seconds(3600)) {
        self.purgeInterval = purgeInterval
        self.host = host
        self.port = port
        self.storage = storage
        self.limits = limits
        self.connections = connections
        self.logLevel = logLevel
        self.expirySweepInterval = expirySweepInterval
    }
}

/// Wires everything: storage (opened, migrated and checked on the workers' blocking threads, not on the
/// caller's), database, routes, middleware and the HTTP server. `workers` belong to the caller, who shuts
/// them down after the application has stopped.
public func buildApplication(
    _ configuration: AppConfiguration, workers: WorkerThreads, now: @escaping @Sendable () -> Date = { Date() }
) async throws -> some ApplicationProtocol {
    var services = try await workers.storage.blockingIO {
        try AppServices.open(storage: configuration.storage, workers: workers, limits: configuration.limits,
                             security: configuration.security, now: now)
    }
    if let path = configuration.uploadTracePath { services.uploadTrace = try UploadTraceLog(path: path) }
    return try await buildApplication(configuration, services: services)
}

/// Builds the application around already-open services (tests share them to arrange state).
public func buildApplication(_ configuration: AppConfiguration, services: AppServices) async throws -> some ApplicationProtocol {
    var logger = Logger(label: "casefiles")
    logger.logLevel = configuration.logLevel
    let orphans = try await services.sweepOrphanBlobs()
    if !orphans.isEmpty { logger.notice("removed orphan blobs", metadata: ["count": "\(orphans.count)"]) }

    let tls = configuration.tls.isEnabled ? try TLSContextBox(files: configuration.tls) : nil
    let (router, tusRoutes) = try buildRouter(
        services, forwarded: ForwardedMiddleware(trusted: TrustedProxies(configuration.trustedProxies),
                                                 scheme: tls == nil ? "http" : "https"))
    var background: [any Service] = [
        UploadExpiryService(services: services, interval: configuration.expirySweepInterval, logger: logger),
        RetentionPurgeService(services: services, interval: configuration.purgeInterval, logger: logger),
    ]
    if let tls { background.append(TLSReloadService(box: tls, logger: logger)) }
    return Application(
        responder: ResponseHeadersResponder(wrapped: MethodOverrideResponder(wrapped: MethodNotAllowedResponder(
            wrapped: router.buildResponder(), routes: router.routes, tusRoutes: tusRoutes))),
        server: .guardedHTTP1(
            limits: configuration.connections,
            registry: ConnectionRegistry(maxConnections: configuration.connections.maxConnections, logger: logger),
            tls: tls,
            additionalChannelHandlers: { [LargeReadsHandler(), ExpectContinueHandler()] }),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "CaseFiles"),
        services: background,
        logger: logger)
}

/// The router, and which of its routes speak tus (their 405s carry `Tus-Resumable` too).
func buildRouter(
    _ services: AppServices, forwarded: ForwardedMiddleware = ForwardedMiddleware(trusted: TrustedProxies([]), scheme: "http")
) throws -> (Router<AppRequestContext>, tusRoutes: [Router<AppRequestContext>.RouteDescription]) {
    let router = Router(context: AppRequestContext.self, options: .autoGenerateHeadEndpoints)
    router.add(middleware: forwarded)
    router.add(middleware: ErrorMiddleware())
    router.get("healthz") { _, _ in ["status": "ok"] }
    try WebController().addRoutes(to: router)

    let limiter = SharedRateLimiter(perMinute: services.security.rateLimitPerMinute, now: services.now)
    let tus = router.group("api/v1").add(middleware: TusMiddleware()).add(middleware: AuthMiddleware(database: services.database))
        .add(middleware: RateLimitMiddleware(limiter: limiter, countedMethods: RateLimitMiddleware.tusStateChanging))
    let beforeTus = router.routes.count
    UploadsController(services: services).addRoutes(to: tus)
    let tusRoutes = Array(router.routes[beforeTus...])

    let api = router.group("api/v1").add(middleware: AuthMiddleware(database: services.database))
        .add(middleware: RateLimitMiddleware(limiter: limiter, countedMethods: RateLimitMiddleware.stateChanging))
    CasesController(services: services).addRoutes(to: api)
    try AttachmentsController(services: services).addRoutes(to: api)
    return (router, tusRoutes)
}
