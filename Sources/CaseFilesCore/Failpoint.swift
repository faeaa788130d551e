import Foundation

/// Named crash points for fault tests: `CASEFILES_FAILPOINTS=name=N,other=M` makes the process kill
/// itself with SIGKILL on the Nth time it reaches `name`. Random kills rarely land in the narrow
/// windows (between fsync and commit, between a tombstone and its file's removal) that matter most.
public enum Failpoint {
    private static let configured: [String: Int] = {
        guard let spec = ProcessInfo.processInfo.environment["CASEFILES_FAILPOINTS"] else { return [:] }
        var points: [String: Int] = [:]
        for entry in spec.split(separator: ",") {
            let parts = entry.split(separator: "=")
            if parts.count == 2, let count = Int(parts[1]) { points[String(parts[0])] = count }
        }
        return points
    }()

    private static let hits = NSLock()
    nonisolated(unsafe) private static var counts: [String: Int] = [:]

    public static func hit(_ name: String) {
        guard let target = configured[name] else { return }
        let count = hits.withLock {
            counts[name, default: 0] += 1
            return counts[name]!
        }
        if count == target { kill(getpid(), SIGKILL) }
    }
}
