import CaseFilesCore
import CaseFilesStorage
/// One writer per upload. A new PATCH or DELETE for an upload whose previous request is still in
/// flight asks that request to stop (it keeps what it committed) and takes over once it has: a client
/// resuming after a dropped connection is never locked out until a timeout. This is what tusd and the
/// IETF resumable-upload draft do. Downloads never take this lock.
public actor UploadWriterLocks {
    public struct Lease: Sendable {
        package let uploadID: String
        package let ticket: UInt64
    }

    private struct Holder {
        var ticket: UInt64
        var stop: @Sendable () -> Void
        /// The newest request waiting to take over; at most one, older waiters are superseded.
        var successor: (ticket: UInt64, stop: @Sendable () -> Void, resume: CheckedContinuation<Bool, Never>)?
    }

    private var holders: [String: Holder] = [:]
    private var nextTicket: UInt64 = 0
    /// Counts handovers (`writerHandovers`) and leases held (`uploadsInFlight`).
    private let metrics: EngineMetrics

    public init(metrics: EngineMetrics = .none) {
        self.metrics = metrics
    }

    /// Waits until this request holds the upload, or returns nil if an even newer request superseded it first.
    /// - Parameter stop: called (once) when a newer request wants the upload.
    public func acquire(_ uploadID: String, stop: @escaping @Sendable () -> Void) async -> Lease? {
        nextTicket += 1
        let ticket = nextTicket
        guard var holder = holders[uploadID] else {
            holders[uploadID] = Holder(ticket: ticket, stop: stop)
            metrics.uploadsInFlight.increment()
            return Lease(uploadID: uploadID, ticket: ticket)
        }
        metrics.writerHandovers.increment()
        holder.stop()
        let acquired = await withCheckedContinuation { continuation in
            holder.successor?.resume.resume(returning: false)
            holder.successor = (ticket, stop, continuation)
            holders[uploadID] = holder
        }
        if acquired { metrics.uploadsInFlight.increment() }
        return acquired ? Lease(uploadID: uploadID, ticket: ticket) : nil
    }

    public func release(_ lease: Lease) {
        guard let holder = holders[lease.uploadID], holder.ticket == lease.ticket else { return }
        metrics.uploadsInFlight.decrement()
        if let successor = holder.successor {
            holders[lease.uploadID] = Holder(ticket: successor.ticket, stop: successor.stop)
            successor.resume.resume(returning: true)
        } else {
            holders[lease.uploadID] = nil
        }
    }
}
