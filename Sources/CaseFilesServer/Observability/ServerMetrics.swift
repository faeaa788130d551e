import CoreMetrics
import CaseFilesEngine

/// The HTTP side's metrics (the domain's are `EngineMetrics`), made from the same injected factory. Counted
/// once per request when its response ends (`ObservingResponder`), never per body buffer.
///
/// Names: tusd's where tusd has the metric (`tusd_requests_total`, `tusd_errors_total`, `tusd_bytes_received`,
/// `tusd_connections_open`, with `casefiles_` for `tusd_`; ours add the route template and status to the
/// requests' labels), Prometheus' conventions otherwise.
public struct ServerMetrics: Sendable {
    let factory: any MetricsFactory
    /// Request body bytes read (tusd's `bytes_received`; uploads are nearly all of it).
    let bytesReceived: Counter
    /// Response body bytes written (a cut download counts what was written to the socket).
    let bytesSent: Counter
    /// 507 answers: the disk (or SQLite's) is full.
    let insufficientStorage: Counter
    /// Sampled at each scrape (`sample`).
    let connectionsOpen: Gauge
    let blobStoreFreeBytes: Gauge
    let databaseSizeBytes: Gauge
    /// Webhook events in the outbox by state (`pending`, `delivered`, `dead`): a growing `pending` means the
    /// case system is not taking them.
    func webhookEvents(state: String) -> Gauge {
        Gauge(label: "casefiles_webhook_events", dimensions: [("state", state)], factory: factory)
    }

    public init(factory: any MetricsFactory) {
        self.factory = factory
        bytesReceived = Counter(label: "casefiles_bytes_received", factory: factory)
        bytesSent = Counter(label: "casefiles_bytes_sent", factory: factory)
        insufficientStorage = Counter(label: "casefiles_insufficient_storage_total", factory: factory)
        connectionsOpen = Gauge(label: "casefiles_connections_open", factory: factory)
        blobStoreFreeBytes = Gauge(label: "casefiles_blob_store_free_bytes", factory: factory)
        databaseSizeBytes = Gauge(label: "casefiles_database_size_bytes", factory: factory)
    }

    public static let none = ServerMetrics(factory: NOOPMetricsHandler.instance)

    /// One finished request. `route`: the router's template (`/api/v1/uploads/{id}`), never the raw path, so the
    /// label set stays bounded; `errorCode`: the JSON error code of an error answer.
    func requestFinished(method: String, route: String, status: Int, duration: Duration, bytesIn: Int64,
                         bytesOut: Int64, errorCode: String?) {
        let statusText = String(status)
        Counter(label: "casefiles_requests_total",
                dimensions: [("method", method), ("route", route), ("status", statusText)], factory: factory).increment()
        Timer(label: "casefiles_request_duration_seconds", dimensions: [("method", method), ("route", route)],
              factory: factory).record(duration: duration)
        if bytesIn > 0 { bytesReceived.increment(by: bytesIn) }
        if bytesOut > 0 { bytesSent.increment(by: bytesOut) }
        if let errorCode {
            Counter(label: "casefiles_errors_total", dimensions: [("status", statusText), ("code", errorCode)],
                    factory: factory).increment()
        }
        if status == 507 { insufficientStorage.increment() }
    }
}
