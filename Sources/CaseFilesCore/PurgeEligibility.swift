import Foundation

/// The retention policy's one rule for what a purge takes: a case closed for the whole retention period
/// (`RetentionSettings.retentionDays`, from the shared settings) and not purged yet, unless an admin holds it.
/// The purge, its dry run and the SQL that selects candidates (`MetadataStore.casesDueForPurge`, which narrows
/// the rows with `closedBy(asOf:settings:)` and keeps those this function calls due or held) all use it.
public enum PurgeEligibility: Sendable, Equatable {
    /// Closed for the retention period, not yet purged, not on legal hold: its data goes.
    case due
    /// Would be due, but on legal hold: kept, and reported (dry run) and counted (run) as skipped.
    case held
    /// Open, closed less than the retention period ago, or already purged.
    case notDue

    /// The decision for one case at `asOf`. A case closed at T is due from T + retention on, that instant
    /// included ("closed for 30 days": at T + 30 days it is due; a millisecond earlier it is not). Instants are
    /// compared in whole milliseconds, rounded to the nearest, because that is how the metadata store keeps
    /// `closedAt` ("yyyy-MM-dd HH:mm:ss.SSS"): a case closed at T reads back as T to the millisecond, and must
    /// still be due at exactly T + retention.
    public static func of(_ supportCase: SupportCase, asOf: Date, settings: RetentionSettings) -> PurgeEligibility {
        guard supportCase.isClosed, supportCase.purgedAt == nil, let closedAt = supportCase.closedAt,
              milliseconds(asOf) >= milliseconds(closedAt) + Int64(settings.retentionDays) * 86_400_000
        else { return .notDue }
        return supportCase.legalHold ? .held : .due
    }

    /// Milliseconds since 1970, rounded to the nearest.
    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// The closing time that is due at `asOf` (asOf minus the retention period; later ones by less than half a
    /// millisecond are due too), for narrowing candidates in SQL; `of(_:asOf:settings:)` decides.
    public static func closedBy(asOf: Date, settings: RetentionSettings) -> Date {
        asOf.addingTimeInterval(-settings.retention)
    }
}
