import Foundation
import NIOConcurrencyHelpers
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase

/// Why a writer stopped before its request body ended. The first reason recorded is the one answered.
public enum StopReason: Sendable, Equatable, CaseIterable {
    /// A newer request for the same upload took over (`UploadWriterLocks`: newest wins).
    case superseded
    /// The body arrived slower than `UploadLimits.minReceiveRate` over `UploadLimits.stallWindow`.
    case tooSlow
    /// The server is shutting down (SIGTERM): the request stops at once instead of holding up the exit.
    case shutdown
    /// The body broke off or ended short of its declared length: the client, or its connection, went away.
    case clientGone
}

/// One request's tenure as the only writer of one upload: the lock (`UploadWriterLocks`, newest wins), the
/// slow-client watchdog and the graceful-shutdown hook, each of which stops the request's worker task and
/// records why (`stopReason`). Protocol-neutral: a front-end runs its header checks and its append inside
/// `run`, and maps the outcome to its own answers.
package final class UploadWriter: Sendable {
    private struct State {
        /// Body bytes taken so far, for the watchdog.
        var bytes: Int64 = 0
        var stopReason: StopReason?
        var cancel: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// Counts `count` body bytes as received (the watchdog's measure of progress).
    package func add(_ count: Int) { state.withLockedValue { $0.bytes += Int64(count) } }

    /// Body bytes received so far.
    package var bytesReceived: Int64 { state.withLockedValue { $0.bytes } }

    /// Why the writer was stopped, or nil if it was not.
    package var stopReason: StopReason? { state.withLockedValue { $0.stopReason } }

    /// Records `reason` (unless one is recorded already) and stops the worker, now or as soon as it starts.
    package func stop(_ reason: StopReason) {
        let cancel = state.withLockedValue { state -> (@Sendable () -> Void)? in
            if state.stopReason == nil { state.stopReason = reason }
            return state.cancel
        }
        cancel?()
    }

    private func attach(_ cancel: @escaping @Sendable () -> Void) {
        let stoppedAlready = state.withLockedValue { state in
            state.cancel = cancel
            return state.stopReason != nil
        }
        if stoppedAlready { cancel() }
    }

    /// How a writer's run ended: `operation`'s result (a cancellation already turned into its stop reason's
    /// error), and why `operation` was stopped, if it was: then a body read may have been cut part-way and
    /// its stream is gone, so a front-end must not reuse the connection. Nil also when `operation` never
    /// started (superseded while waiting for the lock: nothing of the body was read).
    package struct Finished<T: Sendable>: Sendable {
        package var result: Result<T, any Error>
        package var stopReason: StopReason?
        /// Body bytes read (`add`), whatever became of them.
        package var bytesReceived: Int64 = 0
    }

    /// Runs `operation` as the upload's only writer: asks any request already writing it to stop and waits
    /// for it to let go (on this node: `locks`; on the others sharing the database: `coordination`), then runs `operation` in a task of its own, which a newer request (`.superseded`),
    /// the watchdog (`.tooSlow`, only with `watchesBody`), graceful shutdown (`.shutdown`) or the
    /// request's own cancellation (`.clientGone`) stops. Never throws: the result says what happened.
    /// - Parameters:
    ///   - watchesBody: arm the watchdog, which stops a body that brings fewer than `limits.minReceiveRate`
    ///     bytes/s (counted by `add`) over any `limits.stallWindow` seconds.
    package static func run<T: Sendable>(
        _ uploadID: String, locks: UploadWriterLocks, coordination: any NodeCoordination, limits: UploadLimits,
        watchesBody: Bool,
        _ operation: @escaping @Sendable (UploadWriter) async throws -> T
    ) async -> Finished<T> {
        let writer = UploadWriter()
        guard let lease = await locks.acquire(uploadID, stop: { writer.stop(.superseded) }) else {
            // An even newer request came before this one got its turn.
            return Finished(result: .failure(UploadError.superseded), stopReason: nil)
        }
        let task = Task {
            // Waiting for another node's writer happens inside the task, so what stops this request (a newer one
            // here, shutdown, the client leaving) also ends the wait.
            try await coordination.asOnlyWriter(of: uploadID, onStop: { writer.stop(.superseded) }) {
                try await operation(writer)
            }
        }
        writer.attach { task.cancel() }
        // A client that stops sending, or trickles, is cut off; what it sent and verified is kept.
        let watchdog = watchesBody ? Task { await writer.watch(limits: limits) } : nil
        defer { watchdog?.cancel() }
        // On SIGTERM the server waits for in-flight requests; an upload may take hours, so it is asked
        // to stop now: it commits what it verified and answers, and the client resumes later.
        let result = await withGracefulShutdownHandler {
            await withTaskCancellationHandler { await task.result } onCancel: { writer.stop(.clientGone) }
        } onGracefulShutdown: {
            writer.stop(.shutdown)
        }
        await locks.release(lease)
        let stopReason = writer.stopReason
        if case .failure(let error) = result, error is CancellationError, let stopReason {
            // Stopped where a cancellation surfaced (a database call, say) rather than in the body read.
            return Finished(result: .failure(AppendDecision.error(for: stopReason, limits: limits)),
                            stopReason: stopReason, bytesReceived: writer.bytesReceived)
        }
        return Finished(result: result, stopReason: stopReason, bytesReceived: writer.bytesReceived)
    }

    /// The slow-client watchdog: every `stallWindow` seconds, stops the writer if fewer than
    /// `minReceiveRate × stallWindow` bytes arrived since the last look. An idle timer alone would not do:
    /// a trickle of tiny body parts would reset it forever.
    private func watch(limits: UploadLimits) async {
        var seen = bytesReceived
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(limits.stallWindow))
            if Task.isCancelled { return }
            let now = bytesReceived
            if Double(now - seen) < limits.minReceiveRate * limits.stallWindow {
                stop(.tooSlow)
                return
            }
            seen = now
        }
    }
}
