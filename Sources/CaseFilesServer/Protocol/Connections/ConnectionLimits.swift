import Foundation

/// What one connection may cost the server: how long each phase of an HTTP/1.1 exchange may take, and how
/// many connections may be open at once. The defaults are nginx's (`client_header_timeout 60s`,
/// `client_body_timeout 60s`, `keepalive_timeout 75s`, `send_timeout 60s`), so a client that works behind
/// nginx works here. Decided per connection by `ConnectionDeadlines` (enforced by `ConnectionGuardHandler`),
/// across connections by `ConnectionRegistry`.
public struct ConnectionLimits: Sendable, Equatable {
    /// From accepting a connection, or from the first byte of a later request, until its whole header
    /// section has arrived. A client that sends nothing, or half a header section, is closed after this.
    public var headerTimeout: Duration
    /// From a request's header section until the end of its body, for every body that an upload handler is
    /// not reading (those are cut by rate instead: `UploadLimits.minReceiveRate` over `stallWindow`); and
    /// from a response until the end of a body its handler did not read (a refusal), which is drained.
    /// JSON bodies are at most 64 KiB, so a body that takes longer is a client trickling on purpose.
    public var bodyTimeout: Duration
    /// Keep-alive: from the end of a response until the next request's first byte.
    public var idleTimeout: Duration
    /// How long a response may wait on a client that stopped reading (the socket's send buffer stays full).
    public var sendTimeout: Duration
    /// Open connections at most. When a new connection arrives at the cap, the longest-idle connection
    /// (one waiting for a request) is closed to admit it; if every connection is busy, the new one is closed.
    public var maxConnections: Int

    public init(headerTimeout: Duration = .seconds(60), bodyTimeout: Duration = .seconds(60),
                idleTimeout: Duration = .seconds(75), sendTimeout: Duration = .seconds(60),
                maxConnections: Int = ConnectionLimits.defaultMaxConnections(descriptorLimit: 1024)) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.idleTimeout = idleTimeout
        self.sendTimeout = sendTimeout
        self.maxConnections = maxConnections
    }

    /// The HTTP/1.1 parser's limits on a request's header section (Hummingbird's defaults, stated here so
    /// the 431 answer can name them): bytes in all fields together, and fields.
    public static let maxHeaderSectionBytes = 80 * 1024
    public static let maxHeaderFields = 1000

    /// Request parts (a header section, or one socket read of body: at most 512 KiB, `LargeReadsHandler`; with TLS,
    /// what one read completes) read ahead of the handler on one connection, as NIOAsyncChannel's watermarks:
    /// reading stops once `high` parts wait and resumes when fewer than `low` do (one readiness can still bring
    /// up to 4 socket reads past it, so ~2.5 MiB at most). A bound on each connection's memory, and on an event
    /// loop's turn: SwiftNIO's default (2, 10) let every connection read 5 MiB and more ahead of its handler, so
    /// 32 uploads starting together had the two loops copy 160 MiB before they answered anything else (the
    /// first probe on a new connection waited up to 190 ms). The bulk pools take bodies in ~1 MiB batches
    /// (`ChunkSink.batchSize`), so two parts keep them fed.
    /// Measured (issue #16; BENCHMARKS.md, 2026-11-29 22:00-23:50): the chunk loops' peak RSS 104 -> 77-94 MiB
    /// and the 64 MiB loop 555 -> 716 MB/s; 32 concurrent uploads' aggregate the same (582 against 587 MB/s).
    /// A constant, not a flag: it is flow control, nothing is refused by it.
    public static let requestReadAhead = (low: 1, high: 2)

    /// Descriptors kept back for everything that is not a connection: the listening socket, SQLite's
    /// connections and WAL files, epoll and its event fds, thread pools, the log.
    public static let reservedDescriptors = 64

    /// The default cap: the largest that cannot exhaust `descriptorLimit` (RLIMIT_NOFILE), where each
    /// connection may hold a second descriptor (the blob it uploads or downloads) and `reservedDescriptors`
    /// stay free; at most 10,000 (a few hundred MiB of socket buffers at worst) unless set higher.
    /// Running out matters more than the count: SwiftNIO's server channel keeps its read pending after a
    /// failed `accept` (EMFILE), so epoll's level-triggered readiness wakes it again at once and its
    /// `AcceptBackoffHandler` never gets a read to delay: one core spins until a descriptor frees up
    /// (seen at 97% CPU with 1,100 idle sockets and a limit of 1,024).
    public static func defaultMaxConnections(descriptorLimit: Int) -> Int {
        min(10_000, max(8, (descriptorLimit - reservedDescriptors) / 2))
    }
}
