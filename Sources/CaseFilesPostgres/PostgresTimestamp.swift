import Foundation
import NIOCore
import PostgresNIO

/// A date as the metadata store keeps it: a `TIMESTAMPTZ` on SQLite's millisecond grid (GRDB stores
/// "yyyy-MM-dd HH:mm:ss.SSS", the fraction cut to the millisecond), so both stores answer the same dates and
/// the rules that compare them (`PurgeEligibility`, `Upload.isExpired`) decide the same on either.
///
/// PostgresNIO's own `Date` coding would keep microseconds and truncate floating-point products; this one rounds
/// to the microsecond first (a `Date` is a `Double` of seconds, ~0.1 µs apart today), then cuts to the
/// millisecond, and decodes to the `Date` nearest that millisecond.
struct PostgresTimestamp: PostgresNonThrowingEncodable, PostgresDecodable {
    let date: Date

    init(_ date: Date) { self.date = date }

    /// PostgreSQL counts microseconds from 2000-01-01 00:00 UTC (postgresql.org/docs/15/datatype-datetime.html);
    /// `Date` counts seconds from 2001-01-01, 366 days later.
    private static let referenceMilliseconds: Int64 = 366 * 86_400 * 1000

    /// Milliseconds since PostgreSQL's epoch, the fraction cut (floor), as GRDB's formatter does.
    var milliseconds: Int64 {
        let microseconds = Int64((date.timeIntervalSinceReferenceDate * 1_000_000).rounded())
        let sinceReference = microseconds >= 0 ? microseconds / 1000 : (microseconds - 999) / 1000
        return sinceReference + Self.referenceMilliseconds
    }

    static var psqlType: PostgresDataType { .timestamptz }
    static var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into byteBuffer: inout ByteBuffer,
                                                   context: PostgresEncodingContext<JSONEncoder>) {
        byteBuffer.writeInteger(milliseconds * 1000)
    }

    init<JSONDecoder: PostgresJSONDecoder>(from buffer: inout ByteBuffer, type: PostgresDataType,
                                          format: PostgresFormat, context: PostgresDecodingContext<JSONDecoder>) throws {
        guard type == .timestamptz || type == .timestamp, format == .binary, buffer.readableBytes == 8,
              let microseconds = buffer.readInteger(as: Int64.self)
        else { throw PostgresDecodingError.Code.typeMismatch }
        let milliseconds = microseconds >= 0 ? microseconds / 1000 : (microseconds - 999) / 1000
        date = Date(timeIntervalSinceReferenceDate: Double(milliseconds - Self.referenceMilliseconds) / 1000)
    }
}
