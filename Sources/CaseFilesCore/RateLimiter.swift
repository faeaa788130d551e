import Foundation

/// A per-user token bucket: each user may make `limit` counted requests in a burst, and earns them back at
/// `limit` per `window` seconds. A value type with no clock or lock of its own: the caller passes the time
/// and serialises access (`RateLimitMiddleware` in the server), so it is tested without a network.
///
/// At most `maxTrackedUsers` buckets are kept; taking one for a new user past that drops the bucket used
/// longest ago. A dropped user starts again with a full bucket, which only errs towards allowing.
public struct RateLimiter: Sendable {
    public enum Decision: Sendable, Equatable {
        case allowed
        /// Refused; the next request is allowed after this many whole seconds (`Retry-After`, RFC 9110 §10.2.3).
        case limited(retryAfter: Int)
    }

    /// Requests per `window`; 0 turns the limiter off.
    public let limit: Int
    /// Seconds over which `limit` requests are earned back.
    public let window: TimeInterval
    public let maxTrackedUsers: Int

    private struct Bucket {
        var tokens: Double
        var updatedAt: Date
        /// When the bucket was last used, for eviction (a counter: dates may tie).
        var lastUse: UInt64
    }

    private var buckets: [Int64: Bucket] = [:]
    private var uses: UInt64 = 0

    public init(limit: Int, window: TimeInterval = 60, maxTrackedUsers: Int = 10_000) {
        self.limit = max(0, limit)
        self.window = window
        self.maxTrackedUsers = max(1, maxTrackedUsers)
    }

    /// The number of users with a bucket now (at most `maxTrackedUsers`).
    public var trackedUsers: Int { buckets.count }

    /// Takes one request from `user`'s bucket at `now`.
    public mutating func take(user: Int64, at now: Date) -> Decision {
        guard limit > 0 else { return .allowed }
        let rate = Double(limit) / window  // tokens per second
        uses += 1
        var bucket = buckets[user] ?? Bucket(tokens: Double(limit), updatedAt: now, lastUse: uses)
        if buckets[user] == nil && buckets.count >= maxTrackedUsers { evictLeastRecentlyUsed() }
        let elapsed = max(0, now.timeIntervalSince(bucket.updatedAt))
        bucket.tokens = min(Double(limit), bucket.tokens + elapsed * rate)
        bucket.updatedAt = now
        bucket.lastUse = uses
        let decision: Decision
        if bucket.tokens >= 1 {
            bucket.tokens -= 1
            decision = .allowed
        } else {
            decision = .limited(retryAfter: max(1, Int(((1 - bucket.tokens) / rate).rounded(.up))))
        }
        buckets[user] = bucket
        return decision
    }

    private mutating func evictLeastRecentlyUsed() {
        if let oldest = buckets.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            buckets[oldest] = nil
        }
    }
}
