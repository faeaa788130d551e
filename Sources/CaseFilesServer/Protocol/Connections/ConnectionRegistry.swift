import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Every open connection, across event loops, for the cap in `ConnectionLimits.maxConnections`: when a new
/// connection arrives at the cap, the connection that has waited longest for a request is closed to admit
/// it (nginx does the same with its keep-alive connections when `worker_connections` runs out). Busy
/// connections are never closed for a newcomer; if all are busy, the newcomer is closed instead.
/// Closures are logged at most once per `logInterval`, with the counts since the last line; counts that
/// arrive in between are flushed when the interval ends, so none is lost and a flood costs one line.
final class ConnectionRegistry: Sendable {
    private struct Entry {
        let channel: any Channel
        /// nil while the connection is busy with a request.
        var idleSince: ContinuousClock.Instant?
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var evicted = 0
        var refused = 0
        var deadlineCloses: [ConnectionDeadlines.Reason: Int] = [:]
        var lastLog: ContinuousClock.Instant?
        var flushScheduled = false
    }

    let maxConnections: Int
    private let logger: Logger
    private let logInterval: Duration
    private let state = NIOLockedValueBox(State())

    init(maxConnections: Int, logger: Logger, logInterval: Duration = .seconds(10)) {
        precondition(maxConnections > 0)
        self.maxConnections = maxConnections
        self.logger = logger
        self.logInterval = logInterval
    }

    /// The number of open connections.
    var count: Int { state.withLockedValue { $0.entries.count } }

    /// Registers a newly accepted connection (idle until its first request). Returns false if the cap is
    /// reached and no connection is idle: the caller closes the newcomer.
    func admit(_ channel: any Channel, now: ContinuousClock.Instant = .now) -> Bool {
        let (admitted, victim, report) = state.withLockedValue { state -> (Bool, (any Channel)?, String?) in
            var victim: (any Channel)?
            if state.entries.count >= maxConnections {
                // The longest-idle connection. A linear scan: it runs only at the cap, over at most the cap.
                let oldest = state.entries.compactMap { key, entry in entry.idleSince.map { (key, $0) } }
                    .min { $0.1 < $1.1 }
                guard let (key, _) = oldest else {
                    state.refused += 1
                    return (false, nil, Self.report(&state, now: now, interval: logInterval, cap: maxConnections))
                }
                victim = state.entries.removeValue(forKey: key)?.channel
                state.evicted += 1
            }
            state.entries[ObjectIdentifier(channel)] = Entry(channel: channel, idleSince: now)
            return (true, victim, Self.report(&state, now: now, interval: logInterval, cap: maxConnections))
        }
        // Race: the victim may have received a request head since it was last marked idle; closing it then
        // costs that client a retry, as it would behind nginx. Closing is safe from any thread.
        victim?.close(promise: nil)
        if victim != nil || !admitted { log(report) }
        return admitted
    }

    func markBusy(_ channel: any Channel) {
        state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.idleSince = nil }
    }

    func markIdle(_ channel: any Channel, now: ContinuousClock.Instant = .now) {
        state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.idleSince = now }
    }

    func remove(_ channel: any Channel) {
        _ = state.withLockedValue { $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// A connection closed because one of its deadlines passed (counted in the next log line).
    func closedPastDeadline(_ reason: ConnectionDeadlines.Reason, now: ContinuousClock.Instant = .now) {
        let report = state.withLockedValue { state in
            state.deadlineCloses[reason, default: 0] += 1
            return Self.report(&state, now: now, interval: logInterval, cap: maxConnections)
        }
        log(report)
    }

    /// Logs `report`, or, when it was held back by the interval, makes sure the held counts are logged
    /// when the interval ends.
    private func log(_ report: String?) {
        if let report {
            logger.notice("\(report)")
            return
        }
        let wait = state.withLockedValue { state -> Duration? in
            guard !state.flushScheduled, let last = state.lastLog else { return nil }
            state.flushScheduled = true
            return last.advanced(by: logInterval) - .now
        }
        guard let wait else { return }
        Task { [self] in
            try? await Task.sleep(for: wait)
            let report = state.withLockedValue { state in
                state.flushScheduled = false
                return Self.report(&state, now: .now, interval: logInterval, cap: maxConnections)
            }
            if let report { logger.notice("\(report)") }
        }
    }

    /// One line with every count since the last line, if `interval` has passed since it.
    private static func report(_ state: inout State, now: ContinuousClock.Instant, interval: Duration, cap: Int) -> String? {
        if let last = state.lastLog, now - last < interval { return nil }
        var parts: [String] = []
        if state.evicted > 0 {
            parts.append("closed \(state.evicted) idle connection(s) to admit new ones at the cap of \(cap) (--max-connections)")
        }
        if state.refused > 0 {
            parts.append("refused \(state.refused) new connection(s): all \(cap) open connections were busy")
        }
        let deadlines = ConnectionDeadlines.Reason.allCases.compactMap { reason in
            state.deadlineCloses[reason].map { "\($0) past the \(reason.rawValue) timeout" }
        }
        if !deadlines.isEmpty { parts.append("closed connections: " + deadlines.joined(separator: ", ")) }
        guard !parts.isEmpty else { return nil }
        state.evicted = 0
        state.refused = 0
        state.deadlineCloses = [:]
        state.lastLog = now
        return parts.joined(separator: "; ")
    }
}
