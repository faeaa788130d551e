import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL

/// Hummingbird's HTTP/1.1 child channel with CaseFiles' connection rules added where they need to see
/// the wire: `RequestBytesObserver` first (raw bytes), and `HTTP1ConformanceHandler` and
/// `ConnectionGuardHandler` between SwiftNIO's decoder and the HTTPTypes codec (versions, parser errors,
/// request and response parts). Hummingbird's own `additionalChannelHandlers` go after the codec, too
/// late for either. The pipeline is `HTTP1Channel`'s own, built here because its async channel's read-ahead
/// (`ConnectionLimits.requestReadAhead`) cannot be set through Hummingbird; requests are still handled by
/// `HTTP1Channel.handle`.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel
    let limits: ConnectionLimits
    let registry: ConnectionRegistry
    /// With `--tls-cert`: the context box, read once per connection here, so a SIGHUP reload reaches new
    /// connections only.
    let tls: TLSContextBox?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            // `HTTP1Channel.setup`'s pipeline as of Hummingbird 2.x (re-check it on an upgrade), with our watermarks.
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderFieldSize = http1.configuration.httpDecoder.maxHeaderFieldSize
            decoderLimits.maxHeaderListSize = http1.configuration.httpDecoder.maxHeaderListSize
            decoderLimits.maxHeaderFieldCount = http1.configuration.httpDecoder.maxHeaderFieldCount
            try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false,
                                                     withOutboundHeaderValidation: false, withEncoderConfiguration: .init(),
                                                     withDecoderLimitConfiguration: decoderLimits)
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandlers(http1.configuration.additionalChannelHandlers())
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: http1.configuration.idleTimeout.map { .init($0) }, logger: logger))
            let readAhead = ConnectionLimits.requestReadAhead
            let value = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                wrappingChannelSynchronously: channel,
                configuration: .init(backPressureStrategy: .init(lowWatermark: readAhead.low, highWatermark: readAhead.high),
                                     isOutboundHalfClosureEnabled: true))
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
