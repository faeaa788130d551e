import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import CaseFilesEngine
import CaseFilesStorage

/// `--metrics-listen HOST:PORT`: a second HTTP listener, apart from the service's, serving `GET /metrics`
/// (Prometheus text format 0.0.4) and `GET /readyz`. Kept off the public listener so metrics (route counts,
/// disk figures) need not be exposed to customers, and so a scrape never competes with the upload path's
/// connection cap. It is one of the main application's services; ServiceGroup stops it after the main
/// listener has drained, so `/readyz` says "shutting down" meanwhile.
public struct MetricsListener: Sendable {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let metrics: ServerMetrics
    let readiness: Readiness
    let connections: ConnectionRegistry
    let storage: URL
    let logger: Logger

    func application() -> some ApplicationProtocol {
        // Not `router`: the access matrix (Tests/e2e/test_access_matrix.py) reads the API's routes from the
        // sources by that name, and these are not the API's.
        let metricsRouter = Router()
        metricsRouter.get("metrics") { _, _ in
            await sample()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        metricsRouter.get("readyz") { request, _ in await readiness.response(includeBody: request.method != .head) }
        return Application(router: metricsRouter, configuration: .init(address: .hostname(host, port: port),
                                                                serverName: "CaseFiles-metrics"),
                           logger: logger)
    }

    /// The gauges read at scrape time: open connections, the storage file system's free bytes, the
    /// database's size on disk (the file and its WAL) and the webhook outbox by state.
    private func sample() async {
        metrics.connectionsOpen.record(connections.count)
        let services = readiness.services
        if let free = try? await services.blobs.availableBytes() ?? nil { metrics.blobStoreFreeBytes.record(free) }
        let database = storage.appendingPathComponent(AppServices.databaseName).path
        let size = [database, database + "-wal"].reduce(Int64(0)) { total, path in
            total + ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0)
        }
        metrics.databaseSizeBytes.record(size)
        if let counts = try? await services.database.eventCounts() {
            for (state, count) in counts { metrics.webhookEvents(state: state.rawValue).record(count) }
        }
    }

    /// Parses `HOST:PORT` (`[::1]:9090` for IPv6).
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}
