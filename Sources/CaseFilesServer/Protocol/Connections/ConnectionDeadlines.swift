/// The deadlines of one HTTP/1.1 connection, as a value type: the channel handler feeds it what happened
/// on the connection and performs the action it returns, so every rule is here and testable without a
/// network. Which deadline applies depends on the phase of the exchange (`ConnectionLimits` has the values):
///
/// ```
/// accepted ──header──▶ request head ──body──▶ request end ──(handler, no deadline)──▶ response end ─┐
///    ▲                      ▲                                                                       │
///    │                      └──header── first byte of the next request ◀──idle── keep-alive ◀───────┘
///    └ send: at any time, while the client leaves the socket unwritable (it stopped reading)
/// ```
/// A body taken over by an upload handler (`bodyTakenOver`) has no body deadline here: the upload's own
/// rate watchdog cuts it, after committing what it verified.
struct ConnectionDeadlines {
    typealias Instant = ContinuousClock.Instant

    /// Which deadline closed a connection (the names of `ConnectionLimits`' timeouts).
    enum Reason: String, Sendable, CaseIterable {
        case header, body, idle, send
    }

    enum Action: Equatable {
        /// Arm the connection's one timer for this instant (replacing any armed one).
        case schedule(Instant)
        case close(Reason)
        /// No deadline is in force: disarm the timer.
        case disarm
    }

    private let limits: ConnectionLimits
    /// When the connection last became idle: accepted, or its last response ended.
    private var idleSince: Instant
    private var servedARequest = false
    /// The first byte of a request arrived but not yet its whole header section.
    private var headStartedAt: Instant?
    /// A request whose body is still arriving, and when its header section ended.
    private var bodyStartedAt: Instant?
    private var bodyTakenOver = false
    /// Requests whose response has not ended yet (pipelined requests make this more than one).
    private var unanswered = 0
    private var unwritableSince: Instant?

    init(limits: ConnectionLimits, acceptedAt now: Instant) {
        self.limits = limits
        self.idleSince = now
    }

    /// Waiting for a request, with nothing of one in progress: the connection the cap may close first.
    var isIdle: Bool { bodyStartedAt == nil && unanswered == 0 }

    /// The earliest deadline now in force, and which rule it is.
    var deadline: (at: Instant, reason: Reason)? {
        var candidates: [(at: Instant, reason: Reason)] = []
        if let bodyStartedAt, !bodyTakenOver {
            candidates.append((bodyStartedAt.advanced(by: limits.bodyTimeout), .body))
        }
        if isIdle {
            if let headStartedAt {
                candidates.append((headStartedAt.advanced(by: limits.headerTimeout), .header))
            } else if servedARequest {
                candidates.append((idleSince.advanced(by: limits.idleTimeout), .idle))
            } else {
                candidates.append((idleSince.advanced(by: limits.headerTimeout), .header))
            }
        }
        if let unwritableSince {
            candidates.append((unwritableSince.advanced(by: limits.sendTimeout), .send))
        }
        return candidates.min { $0.at < $1.at }
    }

    /// Every event returns the action for the deadline now in force; the handler skips re-arming a timer
    /// for an unchanged instant.
    ///
    /// Raw bytes arrived (before HTTP parsing). Only the first byte of a request matters: it ends the
    /// keep-alive wait and starts the header deadline, which later bytes do not extend.
    mutating func bytesArrived(at now: Instant) -> Action {
        if isIdle, headStartedAt == nil, servedARequest { headStartedAt = now }
        return rearm()
    }

    mutating func requestHeadReceived(at now: Instant) -> Action {
        headStartedAt = nil
        bodyStartedAt = now
        bodyTakenOver = false
        unanswered += 1
        servedARequest = true
        return rearm()
    }

    mutating func requestEndReceived() -> Action {
        bodyStartedAt = nil
        return rearm()
    }

    /// An upload handler reads this body under its own rate watchdog.
    mutating func bodyTakenOverByHandler() -> Action {
        bodyTakenOver = true
        return rearm()
    }

    /// A response ended. If its request's body is still arriving (the handler answered without reading it
    /// all, as a refusal does), the rest must arrive, to be drained, within the body timeout from now,
    /// whoever had taken the body over: no request is left without a deadline.
    mutating func responseEnded(at now: Instant) -> Action {
        unanswered = max(0, unanswered - 1)
        if unanswered == 0 { idleSince = now }
        if bodyStartedAt != nil {
            bodyStartedAt = now
            bodyTakenOver = false
        }
        return rearm()
    }

    mutating func writabilityChanged(isWritable: Bool, at now: Instant) -> Action {
        if isWritable {
            unwritableSince = nil
        } else if unwritableSince == nil {
            unwritableSince = now
        }
        return rearm()
    }

    /// The armed timer fired: close if a deadline has passed, else arm it for the one now in force.
    func timerFired(at now: Instant) -> Action {
        guard let deadline else { return .disarm }
        return now >= deadline.at ? .close(deadline.reason) : .schedule(deadline.at)
    }

    private func rearm() -> Action {
        deadline.map { .schedule($0.at) } ?? .disarm
    }
}
