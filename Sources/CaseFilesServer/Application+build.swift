import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
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
    /// `--event-loop-nice`: the event loops' nice value (`ThreadPriority`). `serve` sets it on the loops before it
    /// builds the application; `buildApplication` does not (tests share their process's loops).
    public var eventLoopNice = ThreadPriority.eventLoopDefault
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
    /// Where `GET /metrics` (and `/readyz`) are served apart from the API (`--metrics-listen HOST:PORT`); nil:
    /// no metrics listener, and nothing is counted.
    public var metricsListen: (host: String, port: Int)?
    /// `/readyz` turns 503 the moment SIGTERM or SIGINT arrives (`serve`; tests leave their process's signals alone).
    public var watchesShutdownSignals = false
    /// `--log-format`: how `serve` writes its log lines (the logging backend is chosen once, by `serve`).
    public var logFormat: LogFormat = .logfmt
    /// `--database postgres://…`: the metadata store's PostgreSQL database, as given (the `casefiles` command opens
    /// it and hands the store to `buildApplication`); nil: the embedded SQLite file in the storage root.
    public var database: String?
    /// `--webhook URL` (repeatable), `--webhook-secret-file`, `--webhook-retry-base`: events to the case system,
    /// delivered by the outbound target (`CaseFilesOutbound`), which `serve` adds as a service (`extraServices`).
    public var webhooks: [String] = []
    public var webhookSecretFile: String?
    public var webhookRetryBase: TimeInterval = 30
    /// `--cors-origin`: the other origins whose pages may call the API (`CORSPolicy`); none: same-origin only.
    public var corsOrigins: [String] = []
    /// The bounds of each archive index (`--bundle-max-entries`; README, "Bundles").
    public var bundleLimits = BundleLimits()
    /// How often the bundle indexer looks for verified attachments without an index, when it has none to build.
    public var bundleIndexInterval: Duration = .seconds(1)
    /// `--blob-store s3://BUCKET` and the `s3-*` settings: blobs in an object store rather than under `storage`.
    public var objectStore = ObjectStoreSettings()
    /// Makes the blob store when not files under `storage`: `serve` makes the S3 one from `objectStore` (this
    /// target cannot: it links no HTTP client); nil: files under `storage`.
    public var blobStore: BlobStoreFactory?

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
/// - Parameter metadata: the metadata store `configuration.database` names, opened by the caller; nil: the storage
///   root's SQLite.
/// - Parameter coordination: how this node shares the work with the others on the same metadata store
///   (`PostgresNodeCoordination`); nil: it is the only node.
/// - Parameter extraServices: services to run beside the application, made from its open services (the webhook
///   delivery, which the server target cannot build: it has no outbound HTTP).
public func buildApplication(
    _ configuration: AppConfiguration, workers: WorkerThreads, metadata: (any MetadataStore)? = nil,
    coordination: (any NodeCoordination)? = nil,
    now: @escaping @Sendable () -> Date = { Date() },
    extraServices: (AppServices) throws -> [any Service] = { _ in [] }
) async throws -> some ApplicationProtocol {
    // One registry per application, owned here rather than swift-metrics' global MetricsSystem: the engine
    // and the server count through factories made from it, and only the metrics listener reads it.
    let registry = configuration.metricsListen == nil ? nil : PrometheusCollectorRegistry()
    let engineMetrics = registry.map { EngineMetrics(factory: PrometheusMetricsFactory(registry: $0)) } ?? .none
    var services = try await workers.storage.blockingIO {
        try AppServices.open(storage: configuration.storage, workers: workers, metadata: metadata, limits: configuration.limits,
                             security: configuration.security, metrics: engineMetrics,
                             blobStore: configuration.blobStore, now: now)
    }
    if let path = configuration.uploadTracePath { services.uploadTrace = try UploadTraceLog(path: path) }
    if let coordination { services.coordination = coordination }
    return try await buildApplication(configuration, services: services, registry: registry,
                                      extraServices: try extraServices(services))
}

/// Builds the application around already-open services (tests share them to arrange state). `registry`: the
/// one `services.metrics` counts into, served by the metrics listener (`configuration.metricsListen`).
public func buildApplication(_ configuration: AppConfiguration, services: AppServices,
                             registry: PrometheusCollectorRegistry? = nil,
                             extraServices: [any Service] = []) async throws -> some ApplicationProtocol {
    var logger = Logger(label: "casefiles")
    logger.logLevel = configuration.logLevel
    let orphans = try await services.sweepOrphanBlobs()
    if !orphans.isEmpty { logger.notice("removed orphan blobs", metadata: ["count": "\(orphans.count)"]) }

    let tls = configuration.tls.isEnabled ? try TLSContextBox(files: configuration.tls) : nil
    let readiness = Readiness(services: services)
    let serverMetrics = registry.map { ServerMetrics(factory: PrometheusMetricsFactory(registry: $0)) } ?? .none
    let connections = ConnectionRegistry(maxConnections: configuration.connections.maxConnections, logger: logger)
    var background: [any Service] = [
        UploadExpiryService(services: services, interval: configuration.expirySweepInterval, logger: logger),
        RetentionPurgeService(services: services, interval: configuration.purgeInterval, logger: logger),
        ConcatenationVerifierService(services: services, logger: logger),
        BundleIndexService(services: services, limits: configuration.bundleLimits,
                           interval: configuration.bundleIndexInterval, logger: logger),
    ]
    if let tls { background.append(TLSReloadService(box: tls, logger: logger)) }
    background += extraServices
    if configuration.watchesShutdownSignals { background.append(Readiness.SignalWatcher(readiness: readiness)) }
    if let registry, let (host, port) = configuration.metricsListen {
        background.append(MetricsListener(
            host: host, port: port, registry: registry, metrics: serverMetrics, readiness: readiness,
            connections: connections, storage: configuration.storage, logger: logger).application())
    }
    var requestLogger = Logger(label: "casefiles.request")
    requestLogger.logLevel = configuration.logLevel

    let (router, tusRoutes) = try buildRouter(
        services, readiness: readiness,
        forwarded: ForwardedMiddleware(trusted: TrustedProxies(configuration.trustedProxies), scheme: tls == nil ? "http" : "https"))
    return Application(
        responder: ObservingResponder(wrapped: ResponseHeadersResponder(wrapped: CORSResponder(wrapped: MethodOverrideResponder(
            wrapped: MethodNotAllowedResponder(wrapped: router.buildResponder(), routes: router.routes, tusRoutes: tusRoutes)),
            policy: CORSPolicy(origins: configuration.corsOrigins))),
            metrics: serverMetrics, logger: requestLogger),
        server: .guardedHTTP1(
            limits: configuration.connections,
            registry: connections,
            tls: tls,
            additionalChannelHandlers: { [LargeReadsHandler(), InterimResponseHandler(), ExpectContinueHandler()] }),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "CaseFiles"),
        services: background,
        logger: logger)
}

/// The router, and which of its routes speak tus (their 405s carry `Tus-Resumable` too).
func buildRouter(
    _ services: AppServices, readiness: Readiness,
    forwarded: ForwardedMiddleware = ForwardedMiddleware(trusted: TrustedProxies([]), scheme: "http")
) throws -> (Router<AppRequestContext>, tusRoutes: [Router<AppRequestContext>.RouteDescription]) {
    let router = Router(context: AppRequestContext.self, options: .autoGenerateHeadEndpoints)
    // Who the client is (a trusted proxy's word) first: the request log and the URLs handed out use it.
    router.add(middleware: forwarded)
    router.add(middleware: ObservationMiddleware())
    router.add(middleware: ErrorMiddleware())
    router.get("healthz") { _, _ in ["status": "ok"] }
    router.get("readyz") { request, _ in await readiness.response(includeBody: request.method != .head) }
    try WebController().addRoutes(to: router)

    let limiter = SharedRateLimiter(perMinute: services.security.rateLimitPerMinute, now: services.now)
    // The IETF resumable-upload draft shares the tus routes; its requests are answered before TusMiddleware.
    let ietf = ResumableUploadMiddleware(
        controller: ResumableUploadController(services: services), auth: AuthMiddleware(database: services.database, now: services.now),
        rateLimit: RateLimitMiddleware(limiter: limiter, countedMethods: RateLimitMiddleware.tusStateChanging))
    let tus = router.group("api/v1").add(middleware: ietf).add(middleware: TusMiddleware()).add(middleware: AuthMiddleware(database: services.database, now: services.now))
        .add(middleware: RateLimitMiddleware(limiter: limiter, countedMethods: RateLimitMiddleware.tusStateChanging))
    let beforeTus = router.routes.count
    UploadsController(services: services).addRoutes(to: tus)
    let tusRoutes = Array(router.routes[beforeTus...])

    let api = router.group("api/v1").add(middleware: AuthMiddleware(database: services.database, now: services.now))
        .add(middleware: RateLimitMiddleware(limiter: limiter, countedMethods: RateLimitMiddleware.stateChanging))
    CasesController(services: services).addRoutes(to: api)
    DropTokensController(services: services).addRoutes(to: api)
    try AttachmentsController(services: services).addRoutes(to: api)
    // The curl front-end (issue #20): no tus headers, and like tus PATCH a data route, so not rate-limited.
    FilesController(services: services).addRoutes(
        to: router.group("api/v1").add(middleware: AuthMiddleware(database: services.database, now: services.now)))
    EntriesController(services: services).addRoutes(to: api)
    return (router, tusRoutes)
}
