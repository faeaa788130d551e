import CoreMetrics
import CaseFilesCore

/// The upload engine's and the jobs' counters (domain events, no HTTP), made through swift-metrics from an
/// injected factory: `serve` passes a Prometheus factory when `--metrics-listen` is given, tests pass their
/// own, and everything else the no-op one. No global `MetricsSystem` is read.
///
/// Names: tusd's where tusd has the metric (`tusd_uploads_created` → `casefiles_uploads_created`, likewise
/// `_finished`, `_terminated`; tusd's `pkg/prometheuscollector`), and the same family's form for the other
/// upload counters (`casefiles_uploads_failed`, `_expired`); the rest follow Prometheus' conventions
/// (`_total` counters, base units `_bytes` and `_seconds`).
public struct EngineMetrics: Sendable {
    public let factory: any MetricsFactory

    /// Uploads created (tus creation), counted by the front-end once the row exists.
    public let uploadsCreated: Counter
    /// Uploads whose last byte was committed with a matching SHA-256: new attachments (tusd's "finished").
    public let uploadsFinished: Counter
    /// Uploads ended by a DELETE (tus termination).
    public let uploadsTerminated: Counter
    /// Unfinished uploads reclaimed after `--upload-expiry` without progress.
    public let uploadsExpired: Counter
    /// Whole-file SHA-256 mismatches at completion (each also an upload failed with that reason).
    public let wholeFileDigestMismatches: Counter
    /// Requests that asked to write an upload another request was still writing (newest wins).
    public let writerHandovers: Counter
    /// Requests holding an upload's writer lock right now (PATCH, creation with data, DELETE).
    public let uploadsInFlight: Meter
    /// Purged attachments and unfinished uploads, and their bytes.
    public let purgedItems: Counter
    public let purgedBytes: Counter
    /// How long each retention purge run took.
    public let purgeDuration: Timer

    public init(factory: any MetricsFactory) {
        self.factory = factory
        uploadsCreated = Counter(label: "casefiles_uploads_created", factory: factory)
        uploadsFinished = Counter(label: "casefiles_uploads_finished", factory: factory)
        uploadsTerminated = Counter(label: "casefiles_uploads_terminated", factory: factory)
        uploadsExpired = Counter(label: "casefiles_uploads_expired", factory: factory)
        wholeFileDigestMismatches = Counter(label: "casefiles_whole_file_digest_mismatches_total", factory: factory)
        writerHandovers = Counter(label: "casefiles_writer_handovers_total", factory: factory)
        uploadsInFlight = Meter(label: "casefiles_uploads_in_flight", factory: factory)
        purgedItems = Counter(label: "casefiles_purged_items_total", factory: factory)
        purgedBytes = Counter(label: "casefiles_purged_bytes_total", factory: factory)
        purgeDuration = Timer(label: "casefiles_purge_duration_seconds", factory: factory)
    }

    /// Counts nothing (CLI commands, and tests that do not look).
    public static let none = EngineMetrics(factory: NOOPMetricsHandler.instance)

    /// An upload that ended `failed` (`reason`: its stable error code, such as `whole_file_digest_mismatch`).
    public func uploadFailed(reason: String) {
        Counter(label: "casefiles_uploads_failed", dimensions: [("reason", reason)], factory: factory).increment()
    }

    /// A chunk refused because its `Upload-Checksum` or `Content-Digest` did not match (`algorithm`: sha1, sha256, sha512).
    public func checksumMismatch(_ algorithm: ChecksumAlgorithm) {
        Counter(label: "casefiles_checksum_mismatches_total", dimensions: [("algorithm", algorithm.rawValue)],
                factory: factory).increment()
    }
}

extension Timer {
    /// Records a `Duration` (swift-metrics' `Timer` takes nanoseconds).
    public func record(duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
