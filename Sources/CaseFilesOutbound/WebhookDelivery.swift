import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase

/// Where and how events are delivered (`serve --webhook`, `--webhook-secret-file`, `--webhook-retry-base`).
public struct WebhookConfiguration: Sendable {
    /// Every event goes to each of these (`--webhook URL`, repeatable).
    public var urls: [String]
    /// The HMAC-SHA-256 key (`WebhookSecretFile`).
    public var secret: [UInt8]
    /// The first retry's delay, doubled for each next one up to `WebhookRetry.maximumDelay` (seconds).
    public var retryBase: TimeInterval
    /// Delivered and dead events are deleted this long after they finished (seconds: 7 days).
    public var keepFinished: TimeInterval
    /// The longest wait for one receiver's answer (seconds).
    public var requestTimeout: TimeInterval

    public static let defaultRetryBase: TimeInterval = 30

    public init(urls: [String], secret: [UInt8], retryBase: TimeInterval = defaultRetryBase,
                keepFinished: TimeInterval = 7 * 24 * 3600, requestTimeout: TimeInterval = 10) {
        self.urls = urls
        self.secret = secret
        self.retryBase = retryBase
        self.keepFinished = keepFinished
        self.requestTimeout = requestTimeout
    }
}

/// Delivers the outbox (`EventOutbox`) to the webhooks: runs in `serve`'s service group, apart from every request,
/// so a slow or dead receiver never holds up an upload. Each due event is POSTed, signed (`WebhookSignature`), to
/// every URL that has not taken it yet; any 2xx counts as taken. A refused event is tried again after
/// `WebhookRetry.delay` and becomes `dead` after `WebhookRetry.deliveryWindow`. An event is written in the
/// transaction of its state change and marked delivered only after the receiver's 2xx, so a crash in between sends
/// it again after the restart: receivers deduplicate by the event id (at-least-once delivery).
public struct WebhookDelivery: Service {
    package let outbox: any EventOutbox
    package let configuration: WebhookConfiguration
    package let logger: Logger
    package let now: @Sendable () -> Date

    public init(outbox: any EventOutbox, configuration: WebhookConfiguration, logger: Logger,
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.outbox = outbox
        self.configuration = configuration
        self.logger = logger
        self.now = now
    }

    /// How often the outbox is looked at: events come from other processes too (`casefiles purge run`).
    private var pollInterval: Duration { .milliseconds(Int64(min(1, configuration.retryBase) * 1000)) }

    public func run() async throws {
        var httpConfiguration = HTTPClient.Configuration()
        // A redirect could send a signed event to a host nobody configured.
        httpConfiguration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        var lastPrune: Date?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                if lastPrune.map({ now().timeIntervalSince($0) >= 3600 }) ?? true {
                    let pruned = try await outbox.pruneEvents(finishedBefore: now().addingTimeInterval(-configuration.keepFinished))
                    if pruned > 0 { logger.info("pruned finished events", metadata: ["count": "\(pruned)"]) }
                    lastPrune = now()
                }
                try await deliverDue(client)
            } catch is CancellationError {
                break
            } catch {
                logger.error("event delivery pass failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pollInterval) }
        }
        try await client.shutdown()
    }

    /// One pass: every due event, oldest first, one attempt each.
    package func deliverDue(_ client: HTTPClient) async throws {
        for var event in try await outbox.dueEvents(at: now(), limit: 100) {
            var taken = Set(event.deliveredTo.split(separator: "\n").map(String.init))
            var failure: String?
            for url in configuration.urls where !taken.contains(url) {
                do {
                    try await post(event, to: url, client)
                    taken.insert(url)
                } catch {
                    failure = "\(url): \(String(describing: error).prefix(300))"
                }
            }
            let at = now()
            event.attempts += 1
            event.deliveredTo = taken.sorted().joined(separator: "\n")
            if let failure {
                event.lastError = failure
                if WebhookRetry.isPastWindow(createdAt: event.createdAt, at: at) {
                    event.state = .dead
                    event.finishedAt = at
                    logger.error("event undeliverable for 24 hours: dead", metadata: ["event": "\(event.id)", "error": "\(failure)"])
                } else {
                    event.nextAttemptAt = at.addingTimeInterval(WebhookRetry.delay(afterAttempt: event.attempts, base: configuration.retryBase))
                    logger.warning("event delivery refused; will retry", metadata: [
                        "event": "\(event.id)", "attempts": "\(event.attempts)", "error": "\(failure)"])
                }
            } else {
                event.state = .delivered
                event.finishedAt = at
            }
            try await outbox.recordAttempt(event)
        }
    }

    /// POSTs the event's body as it is stored, signed over `"<t>.<body>"`.
    /// - Throws: `WebhookRefused` for an answer that is not 2xx; AsyncHTTPClient's errors for connection failures.
    private func post(_ event: OutboundEvent, to url: String, _ client: HTTPClient) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "CaseFiles-Webhook/1")
        request.headers.add(name: "CaseFiles-Event-Id", value: event.id)
        request.headers.add(name: "CaseFiles-Event-Type", value: event.type.rawValue)
        request.headers.add(name: WebhookSignature.headerName, value: WebhookSignature.header(
            body: event.body, timestamp: Int(now().timeIntervalSince1970), secret: configuration.secret))
        request.body = .bytes(ByteBuffer(string: event.body))
        let response = try await client.execute(request, timeout: .milliseconds(Int64(configuration.requestTimeout * 1000)))
        _ = try await response.body.collect(upTo: 64 * 1024)
        guard (200..<300).contains(response.status.code) else { throw WebhookRefused(status: response.status.code) }
    }
}

public struct WebhookRefused: Error, CustomStringConvertible {
    public let status: UInt
    public var description: String { "answered HTTP \(status)" }
}
