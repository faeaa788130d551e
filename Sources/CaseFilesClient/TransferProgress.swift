import Foundation
import CaseFilesCore

/// Progress for a terminal (a redrawn bar with percent, bytes, rate and ETA) or, when stdout is not a
/// terminal, a plain line every few seconds; silent with `--quiet`.
public final class TransferProgress: @unchecked Sendable {
    private let label: String
    private let total: Int64
    private let quiet: Bool
    private let isTerminal = isatty(STDOUT_FILENO) == 1
    private let started = Date()
    private let startOffset: Int64
    private var lastPrint = Date.distantPast
    private let lock = NSLock()

    public init(label: String, total: Int64, startingAt offset: Int64, quiet: Bool) {
        self.label = label
        self.total = total
        self.quiet = quiet
        self.startOffset = offset
    }

    /// - Parameters: done: bytes of the file read and sent; sent: bytes on the wire when they differ (compressed).
    public func update(_ done: Int64, sent: Int64? = nil, force: Bool = false) {
        guard !quiet else { return }
        lock.withLock {
            let now = Date()
            let interval = isTerminal ? 0.2 : 5.0
            guard force || now.timeIntervalSince(lastPrint) >= interval else { return }
            lastPrint = now
            let elapsed = max(now.timeIntervalSince(started), 0.001)
            let rate = Double(done - startOffset) / elapsed
            let percent = total > 0 ? Double(done) * 100 / Double(total) : 100
            let eta = rate > 0 ? Double(total - done) / rate : 0
            var text = String(format: "%@ %5.1f%%  %@ / %@  %@/s  ETA %@", label, percent, Self.bytes(done),
                              Self.bytes(total), Self.bytes(Int64(rate)), Self.duration(eta))
            if let sent { text += "  sent \(Self.bytes(sent)) compressed" }
            if isTerminal {
                let width = 24
                let filled = total > 0 ? Int(Double(width) * Double(done) / Double(total)) : width
                let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                FileHandle.standardOutput.write(Data("\r[\(bar)] \(text)\u{1B}[K".utf8))
            } else {
                print(text)
            }
        }
    }

    public func finish() {
        guard !quiet, isTerminal else { return }
        FileHandle.standardOutput.write(Data("\n".utf8))
    }

    package static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    package static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds < 360_000 else { return "--:--" }
        let s = Int(seconds)
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%02d:%02d", s / 60, s % 60)
    }
}

/// Parses "8388608", "512KiB", "8MiB", "1GiB" (also KB/MB/GB as binary units, and K/M/G).
public enum ByteCount {
    public static func parse(_ text: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1 << 10),
                                      ("MB", 1 << 20), ("GB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let value = Int(text.dropLast(suffix.count)), value > 0 else { return nil }
            return value * scale
        }
        return Int(text).flatMap { $0 > 0 ? $0 : nil }
    }
}
