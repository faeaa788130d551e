import Foundation
import Logging

/// How `serve` writes its log lines (`--log-format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// `key=value` pairs (logfmt), values quoted when they hold spaces, quotes or `=`.
    case logfmt
    /// One JSON object per line.
    case json
}

/// One line per log event on standard error, as logfmt or JSON: `ts`, `level`, `msg`, then the event's
/// metadata (a request line's fields first in a fixed order, the rest sorted). swift-log ships only
/// `StreamLogHandler`, whose lines are free text, and no package in the list adds a logfmt or JSON handler,
/// hence this one.
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: LogFormat
    private let stream: Stream

    /// The fields of a request's line, in the order a reader expects them.
    static let leadingKeys = ["request_id", "method", "route", "status", "bytes_in", "bytes_out", "duration_ms",
                              "user_id", "upload_id", "error"]

    public init(label: String, format: LogFormat, stream: Stream = .standardError) {
        self.label = label
        self.format = format
        self.stream = stream
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", event.level.rawValue), ("logger", label), ("msg", "\(event.message)"),
        ]
        for key in Self.leadingKeys { if let value = merged.removeValue(forKey: key) { fields.append((key, "\(value)")) } }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        stream.write(Self.line(fields, format: format))
    }

    static func line(_ fields: [(String, String)], format: LogFormat) -> String {
        switch format {
        case .logfmt:
            return fields.map { "\($0.0)=\(logfmtValue($0.1))" }.joined(separator: " ") + "\n"
        case .json:
            return "{" + fields.map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}\n"
        }
    }

    /// logfmt has no specification; this follows the common reading (go-logfmt): bare when the value has no
    /// space, `=`, quote or control character, otherwise quoted with JSON-style escapes.
    static func logfmtValue(_ value: String) -> String {
        let bare = !value.isEmpty && value.unicodeScalars.allSatisfy { $0.value > 0x20 && $0 != "=" && $0 != "\"" && $0.value != 0x7F }
        return bare ? value : jsonString(value)
    }

    /// A JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped.
    static func jsonString(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// Where lines go: each is written with one `write(2)`, so lines from different threads do not interleave.
    public struct Stream: Sendable {
        let descriptor: Int32
        public static let standardError = Stream(descriptor: STDERR_FILENO)
        public static let standardOutput = Stream(descriptor: STDOUT_FILENO)

        func write(_ line: String) {
            var line = line
            line.withUTF8 { bytes in _ = Glibc.write(descriptor, bytes.baseAddress, bytes.count) }
        }
    }
}
