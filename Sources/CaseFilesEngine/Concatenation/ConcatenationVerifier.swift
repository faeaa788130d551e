import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// Wakes the verifier when a final upload is created (a poll every `ConcatenationVerifierService.interval`
/// would also find it; this makes it prompt).
public final class ConcatenationSignal: Sendable {
    private struct State {
        /// A wake with nobody waiting: the next `wait` returns at once.
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    // Not an AsyncStream: a task cancelled while it awaits a stream's `next()` finishes the stream, and every
    // later `next()` then returns nil at once; the verifier's loop waited that way and spun on its query after its
    // first timeout, a core busy on every server (found with `perf` while measuring issue #16).
    private let state = NIOLockedValueBox(State())

    public init() {}

    public func wake() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns on the next `wake()` (one that came while nobody waited returns at once), or after `timeout`.
    func wait(upTo timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [state] in
                // Cancelled (shutdown, or the group ending), the wait ends at once: a waiter left behind would keep
                // the group, and the service, from ever finishing.
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = state.withLockedValue { state -> Bool in
                            if state.pending {
                                state.pending = false
                                return true
                            }
                            if Task.isCancelled { return true }
                            state.waiter = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                        defer { state.waiter = nil }
                        return state.waiter
                    }
                    waiter?.resume()
                }
            }
            group.addTask { [state] in
                // Only a timeout that really elapsed resumes the waiter; a cancelled sleep (a wake came) does not.
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
            await group.next()
            group.cancelAll()
        }
    }
}

/// Verifies final uploads (tus concatenation): SHA-256 cannot be combined from the partials' digests, so the
/// partials are read once, in order, as one stream, hashed, and compared with the declared digest before the
/// final becomes an attachment. The progress (bytes read, the SHA256_CTX over them) is the final upload's own
/// `offset` and `digestState`, committed every `checkpointBytes`: a crash (SIGKILL included) resumes from the last
/// checkpoint, and until the last transaction the final is `uploading`, so nothing is listed half-verified.
/// Reading and hashing run on `BulkWork`'s threads, at nice 10: uploads and requests go first.
public struct ConcatenationVerifier: Sendable {
    package let services: AppServices
    /// Bytes read and hashed in one work item (pread + SHA-256, on one BulkWork thread).
    package static let readSize = 4 << 20
    /// Bytes between two committed checkpoints: a crash re-reads at most this much.
    package static let checkpointBytes: Int64 = 64 << 20

    public init(services: AppServices) {
        self.services = services
    }

    public enum Outcome: Sendable, Equatable {
        case verified(sha256: String)
        case failed(declared: String, computed: String)
    }

    /// Verifies one final upload from its last checkpoint to the end; returns nil if it was not (or no longer)
    /// an unverified final upload.
    /// - Throws: storage errors (a partial's blob missing), the metadata store's; the caller retries later.
    public func verify(finalID: String) async throws -> Outcome? {
        let database = services.database
        guard let final = try await database.upload(id: finalID), final.concat == .final, final.state == .uploading,
              let length = final.length, var digest = SHA256Digest(savedState: final.digestState)
        else { return nil }
        let parts = try await database.finalParts(finalID: finalID)
        var offset = final.offset
        var partStart: Int64 = 0
        var sinceCheckpoint: Int64 = 0
        for part in parts {
            let partLength = part.offset
            defer { partStart += partLength }
            guard offset < partStart + partLength else { continue }
            let reader = try await services.blobs.openForReading(id: part.id)
            while offset < partStart + partLength {
                let at = offset - partStart
                let count = Int(min(Int64(Self.readSize), partLength - at))
                let before = digest
                let (after, read) = try await services.bulkWork.run { () throws -> (SHA256Digest, Int) in
                    var digest = before
                    let buffer = try reader.read(at: at, count: count, allocator: ByteBufferAllocator())
                    guard buffer.readableBytes > 0 else { throw StorageError.missingBlob(part.id) }
                    digest.update(buffer)
                    return (digest, buffer.readableBytes)
                }
                digest = after
                offset += Int64(read)
                sinceCheckpoint += Int64(read)
                if sinceCheckpoint >= Self.checkpointBytes && offset < length {
                    try await database.recordFinalVerification(
                        id: finalID, from: offset - sinceCheckpoint, to: offset, digestState: digest.savedState,
                        completion: nil, at: services.now())
                    sinceCheckpoint = 0
                    Failpoint.hit("concat.after-checkpoint")
                }
            }
        }
        guard offset == length else {
            throw StorageError.io(operation: "final upload \(finalID): partials hold \(offset) of \(length) bytes", errno: 0)
        }
        let computed = digest.finalize().hexString
        let outcome: Outcome
        let completion: UploadCompletion
        if let declared = final.declaredSHA256, declared != computed {
            outcome = .failed(declared: declared, computed: computed)
            completion = .failed(sha256: computed)
        } else {
            outcome = .verified(sha256: computed)
            completion = .verified(sha256: computed)
        }
        Failpoint.hit("concat.before-complete")
        try await database.recordFinalVerification(
            id: finalID, from: offset - sinceCheckpoint, to: offset, digestState: digest.savedState,
            completion: completion, at: services.now())
        if case .failed = outcome {
            for part in parts { try? await services.blobs.remove(id: part.id) }  // else the orphan sweep does
        }
        return outcome
    }
}

/// Runs the verifier inside `serve`: at start (finals a crash interrupted) and whenever a final upload is created
/// (`AppServices.concatenation`), one final at a time. A failed verification is logged and retried on the next
/// pass, never thrown (a throwing service stops the whole application).
public struct ConcatenationVerifierService: Service {
    package let verifier: ConcatenationVerifier
    package let logger: Logger
    /// The longest wait between two passes without a wake-up.
    package static let interval: Duration = .seconds(30)

    public init(services: AppServices, logger: Logger) {
        self.verifier = ConcatenationVerifier(services: services)
        self.logger = logger
    }

    public func run() async throws {
        let services = verifier.services
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                for id in try await services.database.unverifiedFinals() {
                    guard !Task.isShuttingDownGracefully else { break }
                    switch try await verifier.verify(finalID: id) {
                    case .verified(let sha256):
                        logger.info("final upload verified", metadata: ["upload": "\(id)", "sha256": "\(sha256)"])
                    case .failed(let declared, let computed):
                        logger.warning("final upload failed its SHA-256 check", metadata: [
                            "upload": "\(id)", "declared": "\(declared)", "computed": "\(computed)"])
                    case nil: break
                    }
                }
            } catch is CancellationError {
                // Shutdown: the next start resumes from the last checkpoint.
            } catch {
                logger.error("final upload verification failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { await services.concatenation.wait(upTo: Self.interval) }
        }
    }
}
