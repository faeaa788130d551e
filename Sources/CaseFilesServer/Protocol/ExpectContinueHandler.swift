import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// `Expect: 100-continue` (RFC 9110 §10.1.1). Sends `100 Continue` when the route handler says every check
/// its headers decide has passed (the `SendContinue` outbound event, sent right before the body is read),
/// and never after a final response began.
///
/// A final response sent while the client still waits for `100 Continue` (the headers decided it: 409, 413,
/// 404...) gets `Connection: close` and the connection is closed after it (by `HTTP1ConformanceHandler`, the
/// one place that closes after a response, asked with its `CloseAfterResponse` event): the client may or may not send
/// the body now (curl does not), so the server cannot tell where the next request would start, and
/// Hummingbird would otherwise wait for a body that never comes (RFC 9110 §10.1.1: a server that answers
/// before reading the content says whether it will close; RFC 9112 §9.6).
final class ExpectContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct SendContinue: Sendable {}

    /// The request asked for `100 Continue` and neither it nor a final response was sent yet.
    private var awaitingContinue = false
    /// The request's end has not arrived: a body may still be on its way (or held back by the client).
    private var bodyPending = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            awaitingContinue = head.headerFields[.expect]?.lowercased() == "100-continue"
            bodyPending = true
        case .body:
            break
        case .end:
            bodyPending = false
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if awaitingContinue && bodyPending && response.status.kind != .informational {
                context.triggerUserOutboundEvent(HTTP1ConformanceHandler.CloseAfterResponse(), promise: nil)
            }
            awaitingContinue = false
            context.write(data, promise: promise)
        case .body, .end:
            context.write(data, promise: promise)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is SendContinue else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        if awaitingContinue {
            awaitingContinue = false
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: promise)
        } else {
            promise?.succeed(())
        }
    }
}
