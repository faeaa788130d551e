import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import CaseFilesCore

/// The per-user rate limit on state-changing requests other than the data routes (`serve --rate-limit`,
/// default 60 a minute): a refused request gets 429 `rate_limited` with `Retry-After` in seconds (RFC 6585 §4,
/// RFC 9110 §10.2.3). Runs after `AuthMiddleware` (it counts per user id; a request without a user, such as a
/// signed download link, is not counted). The data routes (tus PATCH and HEAD) and reads are never counted:
/// each route group says which methods count (`countedMethods`).
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let limiter: SharedRateLimiter
    let countedMethods: Set<HTTPRequest.Method>

    /// What counts outside the tus routes: every method that changes state.
    static let stateChanging: Set<HTTPRequest.Method> = [.post, .put, .patch, .delete]
    /// What counts on the tus routes: creation and termination; PATCH (the bytes) and HEAD are the data routes.
    static let tusStateChanging: Set<HTTPRequest.Method> = [.post, .delete]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if countedMethods.contains(request.method), let id = context.user?.id,
           case .limited(let retryAfter) = limiter.take(user: id)
        {
            context.logger.notice("rate limited", metadata: ["retryAfter": "\(retryAfter)"])
            throw APIError.rateLimited(limit: limiter.limit, retryAfter: retryAfter)
        }
        return try await next(request, context)
    }
}

/// One `RateLimiter` shared by every route group and event loop, behind a lock.
final class SharedRateLimiter: Sendable {
    private let state: NIOLockedValueBox<RateLimiter>
    private let now: @Sendable () -> Date
    /// Requests per minute (0: off).
    let limit: Int

    init(perMinute limit: Int, now: @escaping @Sendable () -> Date) {
        self.state = NIOLockedValueBox(RateLimiter(limit: limit, window: 60))
        self.now = now
        self.limit = limit
    }

    func take(user: Int64) -> RateLimiter.Decision {
        let now = self.now()
        return state.withLockedValue { $0.take(user: user, at: now) }
    }
}
