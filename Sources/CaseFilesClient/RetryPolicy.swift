import Foundation
import CaseFilesCore

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"),
/// bounded in attempts and in the longest single wait.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var baseDelay: Double
    public var maxDelay: Double

    public init(maxAttempts: Int = 10, baseDelay: Double = 0.5, maxDelay: Double = 30) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The wait before retry number `attempt` (1-based): uniform in [0, min(max, base·2^(attempt-1))].
    public func delay(beforeRetry attempt: Int) -> Double {
        let ceiling = min(maxDelay, baseDelay * pow(2, Double(max(0, attempt - 1))))
        return Double.random(in: 0...ceiling)
    }
}
