import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypesHTTP1
import NIOSSL

/// Hummingbird's HTTP/1.1 child channel with CaseFiles' connection rules added where they need to see
/// the wire: `RequestBytesObserver` first (raw bytes), and `HTTP1ConformanceHandler` and
/// `ConnectionGuardHandler` between SwiftNIO's decoder and the HTTPTypes codec (versions, parser errors,
/// request and response parts). Hummingbird's own `additionalChannelHandlers` go after the codec, too
/// late for either.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel
    let limits: ConnectionLimits
    let registry: ConnectionRegistry
    /// With `--tls-cert`: the context box, read once per connection here, so a SIGHUP reload reaches new
    /// connections only.
    let tls: TLSContextBox?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let codec = try pipeline.handler(type: HTTP1ToHTTPServerCodec.self)
            let guardHandler = ConnectionGuardHandler(limits: limits, registry: registry)
            try pipeline.addHandler(HTTP1ConformanceHandler(), position: .before(codec))
            try pipeline.addHandler(guardHandler, position: .before(codec))
            try pipeline.addHandler(RequestBytesObserver(guardHandler), position: .first)
            // TLS goes in front of everything: the handlers above see the decrypted HTTP/1.1 bytes.
            if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls.current), position: .first) }
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the deadlines, the connection cap and the conformance fixes of `GuardedHTTP1Channel`.
    static func guardedHTTP1(
        limits: ConnectionLimits, registry: ConnectionRegistry, tls: TLSContextBox?,
        additionalChannelHandlers: @escaping @Sendable () -> [any RemovableChannelHandler]
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            var configuration = HTTP1Channel.Configuration(
                additionalChannelHandlers: additionalChannelHandlers(),
                httpDecoderConfiguration: .init(maxHeaderFieldSize: ConnectionLimits.maxHeaderSectionBytes,
                                                maxHeaderListSize: ConnectionLimits.maxHeaderSectionBytes,
                                                maxHeaderFieldCount: ConnectionLimits.maxHeaderFields))
            configuration.idleTimeout = nil  // ConnectionGuardHandler keeps every deadline
            return GuardedHTTP1Channel(http1: HTTP1Channel(responder: responder, configuration: configuration),
                                       limits: limits, registry: registry, tls: tls)
        }
    }
}
